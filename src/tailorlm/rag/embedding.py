"""Text embedders for RAG: the packaged MiniLM (int8 ONNX by default), any sentence-transformers folder, or an
OpenAI-compatible ``/v1/embeddings`` endpoint; all behind an on-disk cache keyed by (embedder identity, text hash).

Vectors come back float32 and L2-normalized, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import Field

from tailorlm.core.config import StrictModel
from tailorlm.errors import ConfigError, ModelNotFoundError
from tailorlm.prompting.embed import resolve_embedder

Backend = Literal["auto", "onnx-int8", "onnx", "torch"]


class EmbedderConfig(StrictModel):
    """Which embedder an index uses. Recorded in the index config: querying must embed the same way."""

    model: str = Field(
        "default",
        description='"default" (packaged MiniLM), a sentence-transformers folder, or '
        '"openai:MODEL" for an OpenAI-compatible endpoint.',
    )
    backend: Backend = Field(
        "auto",
        description="auto = ONNX for BERT-style encoders (int8 where the CPU has VNNI/AMX/dotprod, else fp32), "
        "else torch.",
    )
    base_url: str | None = Field(None, description="Endpoint for openai:MODEL (default: $OPENAI_BASE_URL).")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the endpoint's key.")
    batch_size: int | None = Field(
        None,
        ge=1,
        description="Texts per forward pass, sorted by length. Default per backend: 8 for ONNX (small batches of "
        "similar length pad least; fastest on CPU), 32 for torch, 64 per request for an endpoint.",
    )
    max_tokens_per_batch: int = Field(8192, ge=64, description="Token budget per batch, for long texts.")
    cache: bool = Field(True, description="Reuse vectors of texts embedded before (keyed by model and text).")


class TextEmbedder(Protocol):
    dim: int
    identity: str  # changes whenever the vectors would: model, weights and backend
    count_tokens: Callable[[str], int]

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def _normalize(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


class _LocalEncoder:
    """Shared tokenizer/pooling logic for the ONNX path (and token counting for every local embedder)."""

    def __init__(self, st_folder: Path) -> None:
        from transformers import AutoTokenizer

        self.st_folder = st_folder
        self.encoder_folder = _transformer_folder(st_folder)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.encoder_folder), local_files_only=True)
        cfg_path = st_folder / "sentence_bert_config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
        self.max_length = int(cfg.get("max_seq_length") or min(self.tokenizer.model_max_length, 512))
        self._counter: Any = None

    def count_tokens(self, text: str) -> int:
        # The Rust tokenizer directly: the chunker counts every sentence, and transformers' __call__ costs ~10x the
        # tokenization itself. A private copy, because batching sets truncation on the shared one.
        if self._counter is None:
            from tokenizers import Tokenizer

            self._counter = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
            self._counter.no_truncation()
            self._counter.no_padding()
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    def batches(self, texts: Sequence[str], batch_size: int, token_budget: int) -> list[np.ndarray]:
        """Index batches, longest first (similar lengths pad least), capped by count and padded token budget."""
        lengths = np.array([len(t) for t in texts])
        order = np.argsort(-lengths, kind="stable")
        out, start = [], 0
        while start < len(order):
            longest_tokens = min(self.max_length, int(lengths[order[start]]) // 3 + 2)  # ~3+ chars per token
            n = max(1, min(batch_size, token_budget // max(longest_tokens, 1)))
            out.append(order[start : start + n])
            start += n
        return out


def _transformer_folder(st_folder: Path) -> Path:
    modules_file = st_folder / "modules.json"
    if not modules_file.is_file():
        return st_folder
    for m in json.loads(modules_file.read_text()):
        if m.get("type", "").endswith("Transformer"):
            return st_folder / m.get("path", "")
    return st_folder


class OnnxEmbedder:
    """ONNX Runtime over the exported encoder, with the folder's pooling (mean or CLS) and normalization."""

    def __init__(self, st_folder: Path, *, int8: bool, config: EmbedderConfig) -> None:
        import onnxruntime as ort

        from tailorlm.rag.onnx_export import onnx_model_path, read_pooling

        self.local = _LocalEncoder(st_folder)
        self.count_tokens = self.local.count_tokens
        self.config = config
        pooling = read_pooling(st_folder)
        self.cls_pooling = bool(pooling.get("pooling_mode_cls_token"))
        path = onnx_model_path(self.local.encoder_folder, int8=int8)
        # Several single-threaded sessions working on different batches scale better than one session splitting
        # each small matrix product across cores (sentences make small batches). Up to 4 sessions, then threads.
        cores = os.cpu_count() or 1
        n_sessions = min(cores, 4)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, cores // n_sessions)
        options.inter_op_num_threads = 1
        self.sessions = [
            ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]) for _ in range(n_sessions)
        ]
        self.session = self.sessions[0]
        self._executor: Any = None
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.dim = int(self.session.get_outputs()[0].shape[-1] or 0) or self._probe_dim()
        # The first runs of a session allocate its buffers and pick kernels (~10x a normal batch): pay that at load
        # time, as sentence-transformers users do with a warm-up encode, not inside the first ingest batch.
        warm = self._encode(["a short warm-up sentence for the session"] * 8)
        for session in self.sessions:
            for _ in range(2):
                self._forward(warm, session)
        self.identity = f"onnx{'-int8' if int8 else ''}:{st_folder.name}:{path.parent.name}"

    def _probe_dim(self) -> int:
        return int(self._run(["probe"]).shape[1])

    def _encode(self, texts: Sequence[str], tokenizer: Any = None) -> dict[str, np.ndarray]:
        enc = (tokenizer or self.local.tokenizer)(
            list(texts), padding=True, truncation=True, max_length=self.local.max_length, return_tensors="np"
        )
        feeds = {k: enc[k].astype(np.int64) for k in self.inputs if k in enc}
        if "token_type_ids" in self.inputs and "token_type_ids" not in feeds:
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        feeds["attention_mask"] = enc["attention_mask"].astype(np.int64)
        return feeds

    def _forward(self, feeds: dict[str, np.ndarray], session: Any) -> np.ndarray:
        mask = feeds["attention_mask"]
        hidden = session.run(None, {k: v for k, v in feeds.items() if k in self.inputs})[0]
        if self.cls_pooling:
            return _normalize(hidden[:, 0])
        m = mask[..., None].astype(np.float32)
        return _normalize((hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9))

    def _run(self, texts: Sequence[str]) -> np.ndarray:
        return self._forward(self._encode(texts), self.session)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        batches = self.local.batches(texts, self.config.batch_size or 8, self.config.max_tokens_per_batch)
        if len(self.sessions) == 1 or len(batches) == 1:
            for idx in batches:
                out[idx] = self._forward(self._encode([texts[i] for i in idx]), self.session)
            return out
        if self._executor is None:
            import copy
            from concurrent.futures import ThreadPoolExecutor

            self._executor = ThreadPoolExecutor(len(self.sessions), thread_name_prefix="tailor-embed")
            # One tokenizer per worker: a fast tokenizer shared across threads can fail with "Already borrowed".
            self._tokenizers = [self.local.tokenizer] + [
                copy.deepcopy(self.local.tokenizer) for _ in self.sessions[1:]
            ]
        n = len(self.sessions)

        def work(j: int) -> None:
            # Worker j tokenizes and runs batches j, j+n, j+2n…: longest first, so each gets a similar share.
            for idx in batches[j::n]:
                out[idx] = self._forward(self._encode([texts[i] for i in idx], self._tokenizers[j]), self.sessions[j])

        list(self._executor.map(work, range(n)))
        return out


class TorchEmbedder:
    """Plain sentence-transformers: any architecture and module stack, fp32 torch."""

    def __init__(self, st_folder: Path, config: EmbedderConfig) -> None:
        from tailorlm.prompting.embed import _load_model

        self.model = _load_model(str(st_folder), "cpu")
        self.config = config
        self.dim = int(self.model.get_sentence_embedding_dimension() or 0)
        self.identity = f"torch:{st_folder.name}:{_folder_stamp(st_folder)}"
        tok = self.model.tokenizer
        self.count_tokens = lambda text: len(tok(text, add_special_tokens=False, truncation=False)["input_ids"])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        v = self.model.encode(
            list(texts), batch_size=self.config.batch_size or 32, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(v, dtype=np.float32)


class OpenAIEmbedder:
    """An OpenAI-compatible embeddings endpoint; the official client brings retries and timeouts."""

    def __init__(self, model: str, config: EmbedderConfig) -> None:
        from openai import OpenAI

        base_url = config.base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise ConfigError(f"embedder '{config.model}' needs base_url (or $OPENAI_BASE_URL)")
        self.client = OpenAI(base_url=base_url, api_key=os.environ.get(config.api_key_env) or "none")
        self.model = model
        self.config = config
        self.identity = f"openai:{model}@{base_url}"
        # Tokens are only estimated for an endpoint (~4 characters each): chunk sizes need not be exact.
        self.count_tokens = lambda text: max(1, len(text) // 4)
        self.dim = int(self.embed(["dimension probe"]).shape[1])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows: list[list[float]] = []
        size = self.config.batch_size or 64
        for start in range(0, len(texts), size):
            resp = self.client.embeddings.create(model=self.model, input=list(texts[start : start + size]))
            rows.extend(d.embedding for d in sorted(resp.data, key=lambda d: d.index))
        return _normalize(np.array(rows, dtype=np.float32).reshape(len(texts), -1))


def _folder_stamp(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*.json")) + sorted(folder.rglob("*.safetensors")):
        h.update(f"{p.name}:{p.stat().st_size}".encode())
    return h.hexdigest()[:12]


class EmbeddingCache:
    """SQLite, keyed by (embedder identity, SHA-256 of the text). WAL mode: several processes may share it."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()

    @property
    def db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS vectors (model TEXT, key BLOB, vec BLOB, PRIMARY KEY (model, key))")
            self._local.db = db
        return db

    @staticmethod
    def key(text: str) -> bytes:
        return hashlib.sha256(text.encode("utf-8")).digest()

    def get_many(self, model: str, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            part = keys[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = self.db.execute(f"SELECT key, vec FROM vectors WHERE model=? AND key IN ({marks})", (model, *part))
            found.update((k, np.frombuffer(v, dtype=np.float32)) for k, v in rows)
        return found

    def put_many(self, model: str, items: Sequence[tuple[bytes, np.ndarray]]) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                [(model, k, np.asarray(v, np.float32).tobytes()) for k, v in items],
            )


class CachedEmbedder:
    """Embeds only texts the cache has not seen; the rest come from disk."""

    def __init__(self, inner: TextEmbedder, cache: EmbeddingCache) -> None:
        self.inner = inner
        self.cache = cache
        self.dim = inner.dim
        self.identity = inner.identity
        self.count_tokens = inner.count_tokens
        self.hits = 0
        self.misses = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        keys = [EmbeddingCache.key(t) for t in texts]
        found = self.cache.get_many(self.identity, list(dict.fromkeys(keys)))
        todo = list(dict.fromkeys(k for k in keys if k not in found))
        if todo:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            vectors = self.inner.embed([texts[first[k]] for k in todo])
            self.cache.put_many(self.identity, list(zip(todo, vectors, strict=True)))
            found.update(zip(todo, vectors, strict=True))
        self.misses += len(todo)
        self.hits += len(texts) - len(todo)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32)


def embedding_cache_path() -> Path:
    from tailorlm.models.default import cache_root

    return cache_root() / "embeddings.sqlite"


def build_embedder(config: EmbedderConfig | None = None, *, cache_path: Path | None = None) -> TextEmbedder:
    """The embedder an index config names, wrapped in the on-disk cache unless ``config.cache`` is off."""
    config = config or EmbedderConfig()
    inner: TextEmbedder
    if config.model.startswith("openai:"):
        inner = OpenAIEmbedder(config.model.removeprefix("openai:"), config)
    else:
        folder = resolve_embedder(config.model)
        backend = config.backend
        if backend == "auto":
            backend = auto_backend(folder)
        if backend in ("onnx", "onnx-int8"):
            try:
                inner = OnnxEmbedder(folder, int8=backend == "onnx-int8", config=config)
            except (OSError, ValueError, RuntimeError) as err:
                if config.backend != "auto":
                    raise ModelNotFoundError(f"cannot build the ONNX embedder for {folder}: {err}") from err
                inner = TorchEmbedder(folder, config)  # auto: a model the exporter cannot handle still works
        else:
            inner = TorchEmbedder(folder, config)
    if not config.cache:
        return inner
    return CachedEmbedder(inner, EmbeddingCache(cache_path or embedding_cache_path()))


def auto_backend(st_folder: Path) -> Backend:
    """int8 ONNX where the CPU has int8 dot-product instructions (VNNI, AMX, ARM dotprod/i8mm), fp32 ONNX elsewhere.

    Measured on a 2-core AVX2-only EPYC (docs/rag.md, "Ingest speed"): without VNNI, int8 ONNX embeds no faster
    than fp32 ONNX (167 vs 173 sentences/s), since AVX2's int8 products need extra instructions and the
    activations are quantized on the fly, so there fp32 gives exact vectors at the same speed. torch is the fallback
    for encoders the ONNX path does not cover."""
    if not _is_bert(st_folder):
        return "torch"
    from tailorlm.core.cpu import cpu_info

    return "onnx-int8" if cpu_info().int8_dot else "onnx"


def _is_bert(st_folder: Path) -> bool:
    """The ONNX path is verified for BERT-family encoders with mean/CLS pooling and nothing after pooling."""
    try:
        modules = json.loads((st_folder / "modules.json").read_text())
        config = json.loads((_transformer_folder(st_folder) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    return config.get("model_type") == "bert" and set(kinds) <= {"Transformer", "Pooling", "Normalize"}
