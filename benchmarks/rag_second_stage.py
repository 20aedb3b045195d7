"""Second stages and query transforms against the default retriever, on long non-Wikipedia corpora.

Variants, each on the default index of a corpus (``benchmarks/rag_corpora.py`` builds them), scored on its test
questions with the strict criterion (a returned chunk holds the whole answer):
- ``defaults``: the shipped hybrid retriever;
- ``likelihood``: the top 20 reranked by query likelihood (UPR) with the default model (SmolLM2-135M);
- ``hyde``: the dense side searches the question plus a hypothetical answer written by the default model;
- ``rewrite``: both sides search a keyword query written by the default model.

    python benchmarks/rag_second_stage.py --quick --work /tmp/rc     # pydocs, 30 questions
    python benchmarks/rag_second_stage.py --corpora pydocs manpages --work /tmp/rc

The last line is one JSON object; ``ratio`` is the best variant's recall@5 over the defaults' (1.0: nothing pays).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tailorlm.core.cpu import machine

sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "likelihood": {"reranker": "likelihood", "rerank_top": 20},
    "hyde": {"query_transform": "hyde"},
    "rewrite": {"query_transform": "rewrite"},
}


def measure(index: Path, queries: list[Any], overrides: dict[str, Any]) -> dict[str, float]:
    from rag_corpora import score_lists

    from tailorlm.rag.index import Index

    idx = Index.open(index)
    try:
        retriever = idx.retriever(**overrides)
        t0 = time.perf_counter()
        ranked = [[h.chunk for h in retriever.retrieve(q.question, k=5)] for q in queries]
        ms = (time.perf_counter() - t0) / len(queries) * 1000
    finally:
        idx.close()
    return score_lists(queries, ranked) | {"query_ms": round(ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="pydocs, the first 30 test questions.")
    parser.add_argument("--corpora", nargs="+", default=None, choices=["pydocs", "manpages", "xquad"])
    parser.add_argument("--limit", type=int, default=None, help="Test questions per corpus.")
    parser.add_argument("--work", type=Path, default=None, help="Corpora and indexes (shared with rag_corpora).")
    args = parser.parse_args()
    names = args.corpora or ["pydocs"]
    limit = args.limit or (30 if args.quick else None)

    from rag_corpora import build_corpus

    from tailorlm.rag.evaluation import load_queries
    from tailorlm.rag.index import Index
    from tailorlm.rag.ingest import ingest

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        root = args.work or Path(d)
        for name in names:
            folder = build_corpus(name, root)
            index = root / f"{name}-defaults"
            if not (index / "index.yaml").is_file():
                idx = Index.open(index, create=True)
                try:
                    ingest(idx, (folder / "docs").resolve(), progress=False)
                finally:
                    idx.close()
            queries = load_queries(folder / "questions-test.jsonl")[:limit]
            results[name] = {v: measure(index, queries, o) for v, o in VARIANTS.items()}
            print(f"\n{name} ({len(queries)} test questions)", file=sys.stderr)
            for v, s in results[name].items():
                line = f"  {v:10s} recall@1 {s['recall@1']:.3f}  recall@5 {s['recall@5']:.3f}  {s['query_ms']} ms"
                print(line, file=sys.stderr)
    ratios = [
        max(r[v]["recall@5"] for v in VARIANTS if v != "defaults") / max(r["defaults"]["recall@5"], 1e-9)
        for r in results.values()
    ]
    print(json.dumps({"machine": machine(), "corpora": results, "ratio": round(float(np.mean(ratios)), 3)}))


if __name__ == "__main__":
    main()
