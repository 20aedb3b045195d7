"""Ingest: read → chunk → embed (sentences) → store, incrementally and crash-safely.

Incremental: a document whose content hash the store already holds is skipped; a changed one is replaced; with
``sync``, documents under the ingested root that are gone from disk are removed. Crash-safe: documents are written
in batches through ``Store.replace_documents``, which makes a document visible whole or not at all, so a killed
run leaves a consistent index and the next run re-reads only what is missing or changed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tailorlm.rag.chunking import chunk_document, sentence_spans_in_chunk
from tailorlm.rag.embedding import TextEmbedder
from tailorlm.rag.index import Index
from tailorlm.rag.readers import ReaderOptions, ReadProblem, iter_documents
from tailorlm.rag.retrieval import quantize_sentences
from tailorlm.rag.types import Chunk, Document, StoredChunk


@dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    chunks: int = 0
    sentences: int = 0
    characters: int = 0
    seconds: float = 0.0
    problems: list[ReadProblem] = field(default_factory=list)

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.seconds if self.seconds else 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "chunks": self.chunks,
            "sentences": self.sentences,
            "seconds": round(self.seconds, 3),
            "chunks_per_s": round(self.chunks_per_s, 1),
            "problems": [{"path": p.path, "line": p.line, "message": p.message} for p in self.problems],
        }


def embed_chunks(doc: Document, chunks: list[Chunk], embedder: TextEmbedder, **kw: bool) -> list[StoredChunk]:
    """One document's chunks with their vectors (see ``embed_batch`` for the batched form ingest uses)."""
    return embed_batch([(doc, chunks)], embedder, **kw)


def embed_batch(
    items: list[tuple[Document, list[Chunk]]], embedder: TextEmbedder, *, contextual: bool = True
) -> list[StoredChunk]:
    """Embed every sentence of every chunk in one call (one sorted, padded stream), then assemble the chunks.

    A chunk's vector is the normalized mean of its sentence vectors: it ranks chunks in the first stage for free,
    where embedding the whole chunk too would double the embedding work (docs/rag.md).
    """
    texts: list[str] = []
    spans: list[tuple[int, int]] = []  # per chunk: [start, end) into texts
    for doc, chunks in items:
        for c in chunks:
            sents = [c.text[a:b] for a, b in sentence_spans_in_chunk(c.text)] or [c.text]
            if contextual:
                # A sentence alone often lacks its subject ("It was founded in 1850"); the title and section
                # give it back, for a few tokens each.
                prefix = _context_prefix(doc.title, c.heading)
                sents = [f"{prefix}: {x}" if prefix else x for x in sents]
            spans.append((len(texts), len(texts) + len(sents)))
            texts.extend(sents)
    # Overlapping chunks repeat their boundary sentences: embed each distinct text once.
    unique = list(dict.fromkeys(texts))
    position = {t: i for i, t in enumerate(unique)}
    if unique:
        vectors = embedder.embed(unique)[[position[t] for t in texts]]
    else:
        vectors = np.zeros((0, embedder.dim), np.float32)
    out: list[StoredChunk] = []
    i = 0
    for doc, chunks in items:
        for c in chunks:
            a, b = spans[i]
            i += 1
            sv = vectors[a:b]
            mean = sv.mean(axis=0)
            out.append(
                StoredChunk(
                    chunk_id=c.chunk_id,
                    doc_id=doc.doc_id,
                    doc_hash=doc.hash,
                    source=doc.source,
                    title=doc.title,
                    heading=c.heading,
                    text=c.text,
                    start=c.start,
                    end=c.end,
                    metadata=doc.metadata,
                    vector=(mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32),
                    sentences=quantize_sentences(sv),
                )
            )
    return out


def ingest(
    index: Index,
    path: str | Path,
    *,
    options: ReaderOptions | None = None,
    sync: bool = False,
    batch_chunks: int = 256,
    progress: bool = True,
) -> IngestReport:
    report = IngestReport()
    start = time.perf_counter()
    existing = index.store.document_hashes()
    sources = index.store.document_sources()
    root = Path(path).resolve()
    seen: set[str] = set()
    pending: list[tuple[Document, list[Chunk]]] = []
    pending_chunks = 0

    def flush() -> None:
        nonlocal pending, pending_chunks
        if not pending:
            return
        stored = embed_batch(pending, index.embedder, contextual=index.config.contextual)
        index.store.replace_documents([d for d, _ in pending], stored)
        report.chunks += len(stored)
        report.sentences += int(sum(len(s.sentences) for s in stored))
        for d, _ in pending:
            if d.doc_id in existing:
                report.updated += 1
            else:
                report.added += 1
        pending, pending_chunks = [], 0

    with _progress(progress, path) as bar:
        for item in iter_documents(path, options):
            if isinstance(item, ReadProblem):
                report.problems.append(item)
                bar.problem(item)
                continue
            other = sources.get(item.doc_id)
            if other is not None and other != item.source:
                # doc_ids are paths relative to the ingested folder: the same relative path under another
                # folder would silently replace that document.
                report.problems.append(
                    ReadProblem(
                        item.source,
                        f"doc_id '{item.doc_id}' is already taken by {other}; ingest both from a common parent folder",
                    )
                )
                bar.problem(report.problems[-1])
                continue
            seen.add(item.doc_id)
            if existing.get(item.doc_id) == item.hash:
                report.unchanged += 1
                bar.document(item, 0)
                continue
            chunks = chunk_document(item, index.config.chunking, index.embedder.count_tokens)
            report.characters += len(item.text)
            if not chunks:
                report.problems.append(ReadProblem(item.source, "no text to index after chunking"))
                continue
            pending.append((item, chunks))
            pending_chunks += len(chunks)
            bar.document(item, len(chunks))
            if pending_chunks >= batch_chunks:
                flush()
        flush()
        if sync:
            # Only documents read from under PATH can be gone from it; other folders' documents stay.
            gone = sorted(d for d in set(existing) - seen if _under(sources.get(d, ""), root))
            if gone:
                index.store.delete_documents(gone)
                report.deleted = len(gone)
        index.store.optimize()
    report.seconds = time.perf_counter() - start
    return report


class _Bar:
    """Rich progress over files (counted up front, so there is an ETA), with documents and chunks alongside."""

    def __init__(self, progress: object | None, task: object | None) -> None:
        self.progress = progress
        self.task = task
        self.docs = 0
        self.chunks = 0
        self.paths: set[str] = set()

    def document(self, doc: Document, chunks: int) -> None:
        self.docs += 1
        self.chunks += chunks
        self._advance(str(doc.metadata.get("path", doc.source)))

    def problem(self, problem: ReadProblem) -> None:
        self._advance(problem.path)

    def _advance(self, path: str) -> None:
        if self.progress is None:
            return
        new = path not in self.paths
        self.paths.add(path)
        self.progress.update(  # type: ignore[attr-defined]
            self.task, advance=1 if new else 0, description=f"ingest · {self.docs} docs · {self.chunks} chunks"
        )


class _progress:
    def __init__(self, enabled: bool, path: str | Path) -> None:
        self.enabled = enabled
        self.path = Path(path)

    def __enter__(self) -> _Bar:
        if not self.enabled:
            return _Bar(None, None)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=False
        )
        self.progress.__enter__()
        total = _count_files(self.path)
        task = self.progress.add_task("ingest", total=total)
        return _Bar(self.progress, task)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.__exit__(*exc)


def _count_files(path: Path) -> int | None:
    """Files the readers will open (by suffix), for the bar's total; the globs may skip a few more."""
    from tailorlm.rag.readers import supported_suffixes

    if path.is_file():
        return 1
    suffixes = set(supported_suffixes())
    try:
        return sum(1 for p in _walk(path) if p.is_file() and p.suffix.lower() in suffixes)
    except OSError:
        return None


def _walk(path: Path) -> Iterator[Path]:
    for p in path.rglob("*"):
        if not any(part.startswith(".") for part in p.relative_to(path).parts):
            yield p


def _under(source: str, root: Path) -> bool:
    try:
        p = Path(source).resolve()
    except (OSError, ValueError):
        return False
    return p == root or root in p.parents


def _context_prefix(title: str, heading: str) -> str:
    """ "Title > Section" for a sentence; a Markdown title is usually also the top heading, so it is said once."""
    parts = [title] if title else []
    parts += [h for h in heading.split(" > ") if h and h != title] if heading else []
    return " > ".join(parts)
