"""Hybrid query latency at scale: 100,000 chunks of synthetic text in a LanceDB index, query embedding included.

The chunks' text is random prose from a fixed vocabulary (XQuAD's words when ../shared is present, else
pseudo-words) and their vectors are random unit vectors: latency depends on the index size, not on meaning.
Writing 100k real embeddings would take 15 minutes and measure the embedder, which rag_ingest.py covers.

- **ours**: ``Retriever.retrieve`` (hybrid: dense ANN + full-text, sentence max-sim rescoring, z-score fusion),
  the query embedded by the int8 ONNX MiniLM.
- **baseline**: LanceDB's own hybrid query (``query_type="hybrid"``, its default RRF reranker) on the same table,
  the query embedded by sentence-transformers (fp32 torch): what a LanceDB user would write.

The last line is one JSON object with ``chunks``, ``p95_ms`` (ours), ``baseline_p95_ms`` and ``ratio``.

    python benchmarks/rag_query.py --quick      # 100k chunks, 100 queries
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tailorlm.core.cpu import machine

ROOT = Path(__file__).resolve().parents[1]
DIM = 384


def vocabulary() -> list[str]:
    xquad = ROOT.parent / "shared/data/xquad/xquad.en.json"
    if xquad.is_file():
        words = sorted(set(re.findall(r"[A-Za-z]{3,}", xquad.read_text(encoding="utf-8"))))
        if len(words) > 1000:
            return words
    rng = np.random.default_rng(1)
    return ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(4, 10))) for _ in range(20000)]


def build(location: Path, n: int, words: list[str], seed: int = 0) -> float:
    from tailorlm.rag.retrieval import quantize_sentences
    from tailorlm.rag.stores.lance import LanceStore
    from tailorlm.rag.types import Document, StoredChunk

    rng = np.random.default_rng(seed)
    store = LanceStore.open(location, DIM)
    zipf = np.minimum(rng.zipf(1.3, size=n * 170), len(words)) - 1  # word frequencies like real text
    start = time.perf_counter()
    batch_docs, batch_chunks, pos = [], [], 0
    for i in range(n):
        text = " ".join(words[j] for j in zipf[pos : pos + 170]) + "."
        pos += 170
        doc = Document(doc_id=f"doc{i:06d}", source=f"synthetic/doc{i:06d}", title=f"Doc {i}", text=text)
        sents = rng.normal(size=(5, DIM)).astype(np.float32)
        sents /= np.linalg.norm(sents, axis=1, keepdims=True)
        vec = sents.mean(0)
        batch_docs.append(doc)
        batch_chunks.append(
            StoredChunk(
                f"doc{i:06d}#0",
                doc.doc_id,
                doc.hash,
                doc.source,
                doc.title,
                "",
                text,
                0,
                len(text),
                {"shard": i % 10},
                vec / np.linalg.norm(vec),
                quantize_sentences(sents),
            )
        )
        if len(batch_docs) == 10000 or i == n - 1:
            store.replace_documents(batch_docs, batch_chunks)
            batch_docs, batch_chunks = [], []
    store.optimize()
    seconds = time.perf_counter() - start
    store.close()
    return seconds


def queries(words: list[str], n: int) -> list[str]:
    rng = np.random.default_rng(7)
    return [
        f"What is the {words[rng.integers(len(words))]} of {words[rng.integers(len(words))]} "
        f"{words[rng.integers(len(words))]}?"
        for _ in range(n)
    ]


def percentiles(ms: list[float]) -> dict[str, float]:
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95))}


def time_ours(location: Path, qs: list[str]) -> dict[str, float]:
    from tailorlm.rag.embedding import EmbedderConfig, build_embedder
    from tailorlm.rag.retrieval import Retriever
    from tailorlm.rag.stores.lance import LanceStore

    embedder = build_embedder(EmbedderConfig(cache=False))
    retriever = Retriever(LanceStore.open(location, DIM), embedder.embed)
    for q in qs[:5]:
        retriever.retrieve(q)  # warm-up: index pages into the OS cache
    ms = []
    for q in qs:
        t = time.perf_counter()
        retriever.retrieve(q, k=5)
        ms.append((time.perf_counter() - t) * 1000)
    return percentiles(ms)


def time_baseline(location: Path, qs: list[str]) -> dict[str, float]:
    import lancedb
    from sentence_transformers import SentenceTransformer

    from tailorlm.prompting.embed import default_embedder_dir

    model = SentenceTransformer(str(default_embedder_dir()), device="cpu")
    db = lancedb.connect(str(location))
    table = db.open_table("chunks")

    def query(q: str) -> list:
        v = model.encode([q], normalize_embeddings=True)[0]
        return table.search(query_type="hybrid", vector_column_name="vector").vector(v).text(q).limit(5).to_list()

    for q in qs[:5]:
        query(q)
    ms = []
    for q in qs:
        t = time.perf_counter()
        query(q)
        ms.append((time.perf_counter() - t) * 1000)
    return percentiles(ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 queries instead of 500 (under 3 minutes).")
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()
    n_queries = 100 if args.quick else args.queries
    words = vocabulary()
    with tempfile.TemporaryDirectory() as d:
        location = Path(d) / "index"
        build_s = build(location, args.chunks, words)
        print(f"built {args.chunks} chunks (write + ANN + full-text index) in {build_s:.1f} s", file=sys.stderr)
        qs = queries(words, n_queries)
        ours = time_ours(location, qs)
        try:
            base = time_baseline(location, qs)
        except Exception as err:
            print(f"baseline failed: {err}", file=sys.stderr)
            base = {"p50": float("nan"), "p95": float("nan")}
    print(f"ours     p50 {ours['p50']:.1f} ms  p95 {ours['p95']:.1f} ms", file=sys.stderr)
    print(f"baseline p50 {base['p50']:.1f} ms  p95 {base['p95']:.1f} ms", file=sys.stderr)
    print(
        json.dumps(
            {
                "machine": machine(),
                "chunks": args.chunks,
                "queries": n_queries,
                "p50_ms": round(ours["p50"], 2),
                "p95_ms": round(ours["p95"], 2),
                "baseline_p50_ms": round(base["p50"], 2),
                "baseline_p95_ms": round(base["p95"], 2),
                "ratio": round(ours["p95"] / base["p95"], 3) if base["p95"] == base["p95"] else None,
                "build_s": round(build_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
