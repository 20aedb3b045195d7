"""``serve.yaml``: what `tailor serve` serves and how. Every key is optional; an unknown key is an error.

systems: [runs/ladder-xquad-qa/best]      # System folders or system.yaml files (also given on the command line)
host: 127.0.0.1
port: 8000
store: serve-data/feedback.db             # responses and feedback: a SQLite file, or a postgresql:// URL
keys_file: serve-data/keys.json           # `tailor keys create` writes here; no keys = open, localhost only
limits: {max_tokens: 1024, max_prompt_tokens: 4096, n: 4, body_bytes: 1048576, timeout_s: 120}
batching: {max_batch: 16, window_ms: 15, max_queue: 64}
rate_limit: {rpm: 600, tpm: null}         # per key (per client address when open)
experiments:                              # A/B tests: the client asks for `model: support`
  - {name: support, arms: {a: {system: base}, b: {system: lora}}, shadow: [], sticky: user}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from tailorlm.core.config import StrictModel, load_config
from tailorlm.serve.ab import Experiment


class Limits(StrictModel):
    """Per-request bounds: a request beyond them gets a 400 (413 for the body) before any work is queued."""

    body_bytes: int = Field(1 << 20, ge=1024, description="Largest request body accepted (413 above it).")
    max_tokens: int = Field(1024, ge=1, description="Largest max_tokens a request may ask for.")
    max_prompt_tokens: int = Field(4096, ge=16, description="Largest prompt, after the System's prompt program.")
    n: int = Field(4, ge=1, description="Largest n (completions per request).")
    timeout_s: float = Field(120.0, gt=0, description="A request still unanswered after this gets a 504.")
    embedding_inputs: int = Field(256, ge=1, description="Largest number of texts in one embeddings request.")


class Batching(StrictModel):
    """How concurrent requests are gathered into batches (serve/scheduler.py)."""

    max_batch: int = Field(16, ge=1, description="Rows generated together.")
    window_ms: float = Field(15.0, ge=0, description="How long the first waiting request waits for company.")
    max_queue: int = Field(64, ge=1, description="Waiting rows per model before new requests get 429.")


class RateLimit(StrictModel):
    rpm: int | None = Field(600, ge=1, description="Requests per minute per key (per client address when open).")
    tpm: int | None = Field(None, ge=1, description="Prompt + completion tokens per minute per key.")


class ServeConfig(StrictModel):
    """The server's settings (module docstring)."""

    systems: list[str] = Field(default_factory=list, description="System folders or system.yaml files to serve.")
    host: str = Field(
        "127.0.0.1", description="Address to bind; anything but loopback needs API keys (or allow_open)."
    )
    port: int = Field(8000, ge=0, le=65535)
    store: str = Field("serve-data/feedback.db", description="Feedback store: a SQLite path or a postgresql:// URL.")
    keys_file: str | None = Field(None, description="API keys file (default: $TAILOR_KEYS_FILE or the user config).")
    allow_open: bool = Field(False, description="Serve without API keys on a non-loopback address. Think twice.")
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS; empty = CORS off.")
    log_prompts: bool = Field(False, description="Write prompt and answer text to the logs (off: ids and sizes only).")
    share_weights: Literal["auto", "always", "never"] = Field(
        "auto", description="Systems on one base share its weights (serve/registry.py)."
    )
    limits: Limits = Field(default_factory=Limits)
    batching: Batching = Field(default_factory=Batching)
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    experiments: list[Experiment] = Field(default_factory=list, description="A/B experiments (serve/ab.py).")
    runs_dir: str = Field("runs", description="Folder whose runs and ladder reports the web UI lists.")
    ui: bool = Field(True, description="Serve the web UI at /.")

    @classmethod
    def load(cls, path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> ServeConfig:
        if path is None:
            return cls.model_validate({}) if not overrides else load_config(cls, None, overrides)
        return load_config(cls, Path(path), overrides)
