"""Resolve a model spec and load it.

A spec is one of:
- ``default``: the packaged SmolLM2-135M-Instruct (see ``default.py``);
- a local folder with a Hugging Face ``config.json`` (a saved model, a merged fine-tune, …);
- a hub id such as ``HuggingFaceTB/SmolLM2-360M-Instruct``, for users who have a network or a warm HF cache.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tailorlm.errors import ModelNotFoundError
from tailorlm.models.default import ensure_default_model
from tailorlm.models.device import pick_device, pick_dtype
from tailorlm.models.weights import pickle_allowed, refuse_pickle_weights, safetensors_kwargs

_PATHLIKE_PREFIXES = (".", "/", "~")


@dataclass
class LoadedModel:
    """A model, its tokenizer, and where and how it was loaded."""

    model: Any  # transformers PreTrainedModel
    tokenizer: Any  # transformers PreTrainedTokenizerBase
    spec: str
    path: str  # local folder or hub id actually loaded
    device: torch.device
    dtype: torch.dtype
    load_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return "default" if self.spec == "default" else Path(self.spec).name or self.spec


def resolve_model_path(spec: str) -> str:
    """Turn a spec into something ``from_pretrained`` accepts, with a clear error when nothing is there."""
    if spec == "default":
        return str(ensure_default_model())
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFoundError(
                f"model path {spec!r} is a file, not a folder",
                hint="pass the folder that holds config.json (a GGUF file must be converted first)",
            )
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"model folder {spec!r} has no config.json", hint="point at a folder written by save_pretrained"
            )
        return str(path.resolve())
    if spec.startswith(_PATHLIKE_PREFIXES) or spec.count("/") > 1:
        raise ModelNotFoundError(f"model folder {spec!r} does not exist")
    return spec  # a hub id: from_pretrained resolves it (from the HF cache when offline)


def _hub_error(spec: str, err: Exception) -> ModelNotFoundError:
    hint = "use `default`, a local HF folder, or a hub id that is in your HF cache / reachable online"
    if not pickle_allowed() and "safetensors" in str(err):
        # use_safetensors=True refused a repository that has only pytorch_model.bin (a pickle).
        hint += "; tailorlm loads safetensors weights only: set TAILOR_ALLOW_PICKLE=1 if you trust its .bin files"
    return ModelNotFoundError(
        f"could not load model {spec!r}: not a local folder, and the hub could not provide it ({type(err).__name__})",
        hint=hint,
    )


def load_tokenizer(spec: str) -> Any:
    """Load only the tokenizer of ``spec`` (cheap: used for token counts and data statistics)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise _hub_error(spec, err) from err
    return tokenizer


@contextmanager
def quiet_loading() -> Iterator[None]:
    """No "Loading weights" bar for a sub-second load; our commands draw their own progress for long work.

    The previous state comes back afterwards, so a command that silenced transformers' bars keeps them silent.
    """
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _load_pair(path: str, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **safetensors_kwargs())
        return AutoTokenizer.from_pretrained(path), model


def load_model(
    spec: str = "default", *, device: str | None = "auto", dtype: str | torch.dtype | None = "auto"
) -> LoadedModel:
    """Load a causal LM and its tokenizer, ready for inference (eval mode, left padding for batching)."""
    start = time.perf_counter()
    path = resolve_model_path(spec)
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    refuse_pickle_weights(path, depth=0)  # before the broad except below, which would call it "corrupt"
    try:
        tokenizer, model = _load_pair(path, dt)
    except Exception as err:
        if spec == "default":
            # The cache is ours to repair: convert the packaged file again rather than send the user hunting.
            path = str(ensure_default_model(force=True))
            tokenizer, model = _load_pair(path, dt)
        elif Path(path).is_dir():
            raise ModelNotFoundError(
                f"model folder {path} is incomplete or corrupt: {type(err).__name__}: {err}",
                hint="re-save or re-download it; a folder needs config.json, tokenizer files and weights",
            ) from err
        elif isinstance(err, OSError):
            raise _hub_error(spec, err) from err
        else:
            raise
    # Left padding so that every row of a batch ends at the same position and generation continues from it.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(dev).eval()
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        spec=spec,
        path=path,
        device=dev,
        dtype=dt,
        load_seconds=time.perf_counter() - start,
    )
