"""An index: a store plus the recorded config (embedder, chunking, retrieval defaults) that built it.

The config travels with the index (``index.yaml`` in a LanceDB directory, a meta row in PostgreSQL): a query must
embed exactly as the ingest did, and a second ingest with different chunking would mix two granularities.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from tailorlm.core.config import StrictModel
from tailorlm.core.system import is_postgres_url
from tailorlm.errors import ConfigError, TailorError
from tailorlm.rag.chunking import ChunkingConfig
from tailorlm.rag.embedding import EmbedderConfig, TextEmbedder, build_embedder
from tailorlm.rag.retrieval import RetrievalConfig, Retriever
from tailorlm.rag.stores.base import Store

INDEX_CONFIG = "index.yaml"
STORE_SUBDIR = "lance"


class IndexConfig(StrictModel):
    """Everything that decides what an index holds. Changing embedder or chunking needs a new index."""

    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    contextual: bool = Field(True, description="Embed each sentence with its document title and section.")
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig, description="Defaults for queries.")

    def build_fingerprint(self) -> dict[str, Any]:
        # Retrieval settings are query-time only; they may change freely on an existing index.
        return {
            "embedder": self.embedder.model_dump(exclude={"batch_size", "max_tokens_per_batch", "cache"}),
            "chunking": self.chunking.model_dump(),
            "contextual": self.contextual,
        }


class Index:
    def __init__(self, location: str, config: IndexConfig, store: Store, embedder: TextEmbedder) -> None:
        self.location = location
        self.config = config
        self.store = store
        self.embedder = embedder

    @classmethod
    def open(cls, location: str | Path, config: IndexConfig | None = None, *, create: bool = False) -> Index:
        """Open an index; with ``create``, make it (with ``config``) when it does not exist yet.

        A ``config`` that disagrees with an existing index's embedder or chunking is an error, not a silent mix.
        """
        from tailorlm.rag.stores import open_store

        location = str(location)
        stored = _read_config(location)
        if stored is None:
            if not create:
                raise TailorError(
                    f"no index at {location}", hint="create it with `tailor rag ingest PATH --index LOCATION`"
                )
            config = config or IndexConfig()
        elif config is not None and config.build_fingerprint() != stored.build_fingerprint():
            raise ConfigError(
                f"index {location} was built with a different embedder or chunking",
                hint="use a new --index location, or drop the --embedder/--chunk-* options to use the index's own",
            )
        else:
            config = config.model_copy(update={"retrieval": config.retrieval}) if config else stored
        embedder = build_embedder(config.embedder)
        if stored is None:
            # Config first: a crash before the store exists leaves an empty index that opens fine, never a store
            # without the config that says how it was embedded.
            _write_config(location, config)
        store = open_store(_store_location(location), embedder.dim)
        return cls(location, config, store, embedder)

    def retriever(self, config: RetrievalConfig | None = None, **overrides: Any) -> Retriever:
        cfg = (config or self.config.retrieval).model_copy(update=overrides)
        reranker = build_reranker(cfg.reranker, cfg.query_model) if cfg.reranker else None
        transform = None
        if cfg.query_transform is not None:
            from tailorlm.rag.rerank import QueryTransform

            transform = QueryTransform(cfg.query_transform, cfg.query_model)
        return Retriever(self.store, self.embedder.embed, cfg, reranker, transform)

    def close(self) -> None:
        self.store.close()


def _store_location(location: str) -> str:
    return location if is_postgres_url(location) else str(Path(location) / STORE_SUBDIR)


def _read_config(location: str) -> IndexConfig | None:
    from tailorlm.core.config import load_config

    if is_postgres_url(location):
        from tailorlm.rag.stores.pgvector import read_meta

        data = read_meta(location, "index_config")
        return IndexConfig.model_validate(data) if data is not None else None
    path = Path(location) / INDEX_CONFIG
    if not path.is_file():
        # Hidden entries are a killed first run's atomic-write leftovers (``.index.yaml.XXXX.tmp``), not content: the
        # next ingest must be able to start the index over.
        if Path(location).exists() and any(not p.name.startswith(".") for p in Path(location).iterdir()):
            raise TailorError(f"{location} exists but is not a tailorlm index (no {INDEX_CONFIG})")
        return None
    return load_config(IndexConfig, path)


def _write_config(location: str, config: IndexConfig) -> None:
    from tailorlm.core.io import atomic_write_yaml

    data = config.model_dump(mode="json")
    if is_postgres_url(location):
        from tailorlm.rag.stores.pgvector import write_meta

        write_meta(location, "index_config", data)
    else:
        atomic_write_yaml(Path(location) / INDEX_CONFIG, data)


def build_reranker(spec: str, query_model: str = "default") -> Any:
    """A CrossEncoder folder or ``likelihood[:MODEL]`` → its scores; 'llm' is built by the caller that holds an
    Engine."""
    if spec == "llm":
        raise ConfigError("reranker 'llm' needs an engine; use tailorlm.rag.rerank.LLMReranker(engine)")
    if spec == "likelihood" or spec.startswith("likelihood:"):
        from tailorlm.rag.rerank import LikelihoodReranker

        return LikelihoodReranker(spec.partition(":")[2] or query_model)
    from tailorlm.rag.rerank import CrossEncoderReranker

    return CrossEncoderReranker(spec)
