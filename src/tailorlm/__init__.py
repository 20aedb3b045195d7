"""tailorlm: tailor a language model to one use case, and prove on its own eval set what each step bought."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tailorlm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
