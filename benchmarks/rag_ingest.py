"""End-to-end indexing speed (read → chunk → embed → store) and recall, ours against the plain baseline.

Corpus: the 48 XQuAD-en articles as Markdown files (scripts/build_xquad_rag.py; CC BY-SA 4.0), queried with its
1,190 questions; a chunk is relevant when it holds the answer's span.

- **baseline**: what a user would write first: pack paragraphs into ~1,000-character chunks, embed each chunk with
  sentence-transformers (MiniLM, fp32 torch), keep the vectors in a NumPy matrix (flat search) saved with np.save.
- **ours**: ``tailor rag ingest`` into a fresh LanceDB index: token-aware chunking, int8 ONNX sentence
  embeddings, LanceDB with full-text index; queried with the default hybrid retriever.

Speed is reported per 1,000 characters (a "chunk" of the issue's size), since the two sides cut chunks
differently. The embedding cache is off and the ONNX export is done before timing (it is a one-time cost, ~8 s,
printed separately). Each side runs ``--repeats`` times; the median is reported. The last line is one JSON object.

    python benchmarks/rag_ingest.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tailorlm.core.cpu import machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def corpus(tmp: Path, xquad: Path) -> tuple[Path, Path]:
    from build_xquad_rag import build

    build(xquad, tmp / "xq")
    return tmp / "xq" / "articles", tmp / "xq" / "questions-articles.jsonl"


def baseline(articles: Path, questions: list, tmp: Path) -> dict:
    from sentence_transformers import SentenceTransformer

    from tailorlm.prompting.embed import default_embedder_dir

    model = SentenceTransformer(str(default_embedder_dir()), device="cpu")
    model.encode(["warm-up"])
    start = time.perf_counter()
    chunks: list[tuple[str, int, int, str]] = []  # doc, start, end, text
    for path in sorted(articles.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        pos, cur_start, cur_end = 0, 0, 0
        for para in text.split("\n\n"):
            p_start = text.index(para, pos)
            pos = p_start + len(para)
            if cur_end > cur_start and pos - cur_start > 1000:
                chunks.append((path.name, cur_start, cur_end, text[cur_start:cur_end]))
                cur_start = p_start
            cur_end = pos
        if cur_end > cur_start:
            chunks.append((path.name, cur_start, cur_end, text[cur_start:cur_end]))
    vectors = model.encode([c[3] for c in chunks], batch_size=32, normalize_embeddings=True)
    np.save(tmp / "baseline.npy", vectors)
    seconds = time.perf_counter() - start
    chars = sum(len(c[3]) for c in chunks)
    qv = model.encode([q.question for q in questions], batch_size=64, normalize_embeddings=True)
    top = np.argsort(-(qv @ vectors.T), axis=1)[:, :5]
    hits = 0
    for q, row in zip(questions, top, strict=True):
        g = q.gold[0]
        hits += any(chunks[j][0] == g["doc_id"] and chunks[j][1] < g["end"] and g["start"] < chunks[j][2] for j in row)
    return {"seconds": seconds, "chars": chars, "chunks": len(chunks), "recall@5": hits / len(questions)}


def ours(articles: Path, questions: list, tmp: Path) -> dict:
    from tailorlm.rag.evaluation import evaluate_retrieval
    from tailorlm.rag.index import Index, IndexConfig
    from tailorlm.rag.ingest import ingest

    config = IndexConfig()
    config.embedder.cache = False
    location = tmp / "ours-index"
    shutil.rmtree(location, ignore_errors=True)
    index = Index.open(location, config, create=True)  # loads the embedder: outside the timing, as the baseline's
    start = time.perf_counter()
    report = ingest(index, articles, progress=False)
    seconds = time.perf_counter() - start
    result = evaluate_retrieval(index.retriever(), questions, (5,))
    index.close()
    return {
        "seconds": seconds,
        "chars": report.characters,
        "chunks": report.chunks,
        "recall@5": result["metrics"]["recall@5"]["value"],
    }


def gemm_peak_gflops(seconds: float = 2.0) -> float:
    """What this CPU's fp32 matrix products reach (torch, all threads) on an encoder-layer-sized product."""
    import torch

    a, b = torch.randn(2048, 384), torch.randn(384, 1536)
    a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * 2048 * 384 * 1536 * n / (time.perf_counter() - start) / 1e9


def encoder_gflop(token_counts: list[int], layers: int = 6, d: int = 384, ffn: int = 1536) -> float:
    """Forward FLOPs of a BERT encoder over sequences of these lengths: the linear layers (2 FLOPs per weight per
    token) and attention's two n x n products per layer."""
    linear = 2 * layers * (4 * d * d + 2 * d * ffn) * sum(token_counts)
    attention = 2 * 2 * layers * d * sum(n * n for n in token_counts)
    return (linear + attention) / 1e9


def profile(articles: Path, b_seconds: float) -> dict:
    """Why the ratio is what it is: the FLOPs each side must do, the rate each reaches, and this CPU's peak."""
    from tailorlm.rag.chunking import chunk_document, sentence_spans_in_chunk
    from tailorlm.rag.embedding import EmbedderConfig, build_embedder
    from tailorlm.rag.index import IndexConfig
    from tailorlm.rag.ingest import _context_prefix
    from tailorlm.rag.readers import iter_documents

    embedder = build_embedder(EmbedderConfig(cache=False))
    config = IndexConfig()
    texts: list[str] = []
    baseline_texts: list[str] = []
    for doc in iter_documents(articles):
        baseline_texts += [p for p in doc.text.split("\n\n") if p.strip()]  # the same characters, paragraph-wise
        for c in chunk_document(doc, config.chunking, embedder.count_tokens):
            prefix = _context_prefix(doc.title, c.heading)
            texts += [f"{prefix}: {c.text[a:b]}" for a, b in sentence_spans_in_chunk(c.text)]
    texts = list(dict.fromkeys(texts))
    ours_tokens = [min(256, embedder.count_tokens(t) + 2) for t in texts]
    base_tokens = [min(256, embedder.count_tokens(t) + 2) for t in baseline_texts]
    start = time.perf_counter()
    embedder.embed(texts)
    embed_s = time.perf_counter() - start
    peak = gemm_peak_gflops()
    ours_gflop, base_gflop = encoder_gflop(ours_tokens), encoder_gflop(base_tokens)
    return {
        "peak_gemm_gflops": round(peak, 1),
        "ours_embed_s": round(embed_s, 2),
        "ours_tokens": sum(ours_tokens),
        "baseline_tokens": sum(base_tokens),
        "ours_gflop": round(ours_gflop, 1),
        "baseline_gflop": round(base_gflop, 1),
        "ours_gflops_rate": round(ours_gflop / embed_s, 1),
        "baseline_gflops_rate": round(base_gflop / b_seconds, 1),
        # The best ratio any fp32 path could reach on this CPU: the baseline's time over our FLOPs at peak.
        "ratio_bound_at_peak": round(b_seconds / (ours_gflop / peak), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="One repeat per side (under 3 minutes).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--xquad", type=Path, default=ROOT.parent / "shared/data/xquad/xquad.en.json")
    parser.add_argument("--profile", action="store_true", help="Add FLOPs, rates and this CPU's GEMM peak.")
    args = parser.parse_args()
    if not args.xquad.is_file():
        sys.exit(f"XQuAD not found at {args.xquad} (the benchmark needs ../shared/data)")
    repeats = 1 if args.quick else args.repeats
    os.environ.setdefault("TAILOR_CACHE", str(Path(tempfile.gettempdir()) / "tailor-bench-cache"))

    from tailorlm.rag.embedding import EmbedderConfig, build_embedder
    from tailorlm.rag.evaluation import load_queries

    t0 = time.perf_counter()
    build_embedder(EmbedderConfig(cache=False))  # one-time ONNX export + int8 quantization (cached after)
    print(f"ONNX export (one-time, cached): {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        articles, qfile = corpus(tmp, args.xquad)
        questions = load_queries(qfile)
        runs_b = [baseline(articles, questions, tmp) for _ in range(repeats)]
        runs_o = [ours(articles, questions, tmp) for _ in range(repeats)]
        b_seconds = statistics.median(r["seconds"] for r in runs_b)
        prof = profile(articles, b_seconds) if args.profile else None
    b_s = statistics.median(r["seconds"] for r in runs_b)
    o_s = statistics.median(r["seconds"] for r in runs_o)
    b_rate = runs_b[0]["chars"] / 1000 / b_s
    o_rate = runs_o[0]["chars"] / 1000 / o_s
    for name, runs, rate in (("baseline", runs_b, b_rate), ("ours", runs_o, o_rate)):
        r = runs[0]
        median_s = statistics.median(x["seconds"] for x in runs)
        print(
            f"{name:8s} {r['chunks']:4d} chunks, {r['chars']} chars, median {median_s:.2f} s"
            f" → {rate:.1f} 1k-char chunks/s, recall@5 {r['recall@5']:.4f}",
            file=sys.stderr,
        )
    print(
        json.dumps(
            {
                "machine": machine(),
                "ours_chunks_per_s": round(o_rate, 1),
                "baseline_chunks_per_s": round(b_rate, 1),
                "ratio": round(o_rate / b_rate, 2),
                "ours_recall@5": round(runs_o[0]["recall@5"], 4),
                "baseline_recall@5": round(runs_b[0]["recall@5"], 4),
                "chunk_unit": "1000 characters",
                "repeats": repeats,
                "embedder_backend": _backend(),
                **({"profile": prof} if prof else {}),
            }
        )
    )


def _backend() -> str:
    from tailorlm.prompting.embed import default_embedder_dir
    from tailorlm.rag.embedding import auto_backend

    return auto_backend(default_embedder_dir())


if __name__ == "__main__":
    main()
