"""Retrieval on long, non-Wikipedia documents: plain BM25, plain dense, tailorlm's defaults and tailorlm tuned.

Corpora (each a folder with ``docs/`` and ``questions-{train,test}.jsonl``; answers are verbatim spans, often a
whole sentence):
- ``pydocs``: 101 Python package READMEs and standard-library docs (``scripts/build_pydocs_corpus.py``);
- ``manpages``: Debian man pages (``scripts/build_manpages_corpus.py``);
- ``xquad``: the 48 XQuAD-en articles as Markdown (``scripts/build_xquad_rag.py``; questions split in two).

Every system is scored on the **test** questions, with the held-out check's criterion: a hit is a returned chunk
that contains the whole answer (strict), plus the adjacent measure (the answer spread over returned chunks that
touch). ``tuned`` runs ``rag tune`` on the **train** questions only.

- ``bm25``: 1,000/200-character chunks, LanceDB's BM25 full-text search (what a user would write first);
- ``dense``: the same chunks embedded whole with MiniLM, flat cosine search;
- ``defaults``: ``tailor rag ingest`` + ``tailor rag query`` as shipped;
- ``tuned``: ``tailor rag tune`` on the train questions, then the same queries.

    python benchmarks/rag_corpora.py --quick        # pydocs and manpages, test questions (about 3 minutes warm)
    python benchmarks/rag_corpora.py --corpora pydocs manpages xquad

The last line is one JSON object; ``ratio`` is tuned recall@5 / BM25 recall@5, the lowest over the corpora.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tailorlm.core.cpu import machine

ROOT = Path(__file__).resolve().parents[1]
BUILDERS = {
    "pydocs": ["scripts/build_pydocs_corpus.py", "--out"],
    "manpages": ["scripts/build_manpages_corpus.py", "--out"],
}


def build_corpus(name: str, out: Path) -> Path:
    folder = out / name
    if (folder / "questions-test.jsonl").is_file():
        return folder
    if name == "xquad":
        sys.path.insert(0, str(ROOT / "scripts"))
        from build_xquad_rag import build

        build(ROOT.parent / "shared/data/xquad/xquad.en.json", folder / "src")
        (folder / "docs").symlink_to(folder / "src" / "articles")
        rows = (folder / "src" / "questions-articles.jsonl").read_text().splitlines()
        (folder / "questions-train.jsonl").write_text("\n".join(rows[0::2][:200]) + "\n")
        (folder / "questions-test.jsonl").write_text("\n".join(rows[1::2][:200]) + "\n")
        return folder
    script, flag = BUILDERS[name]
    subprocess.run([sys.executable, str(ROOT / script), flag, str(folder)], check=True, stdout=subprocess.DEVNULL)
    return folder


def char_chunks(docs: Path, size: int = 1000, overlap: int = 200) -> list[dict[str, Any]]:
    out = []
    for path in sorted(p for p in docs.rglob("*") if p.is_file()):
        text = path.read_text(encoding="utf-8")
        rel = str(path.relative_to(docs))
        for start in range(0, max(1, len(text) - overlap), size - overlap):
            out.append({"doc_id": rel, "start": start, "end": min(len(text), start + size),
                        "text": text[start : start + size]})  # fmt: skip
    return out


def as_stored(c: dict[str, Any]) -> Any:
    from tailorlm.rag.types import StoredChunk

    z = np.zeros(1, np.float32)
    return StoredChunk(f"{c['doc_id']}#{c['start']}", c["doc_id"], "", "", "", "", c["text"], c["start"], c["end"],
                       {}, z, z[None].astype(np.int8))  # fmt: skip


def score_lists(queries: list[Any], ranked: list[list[Any]]) -> dict[str, float]:
    out: dict[str, list[float]] = {"recall@1": [], "recall@5": [], "recall_adjacent@5": []}
    for q, hits in zip(queries, ranked, strict=True):
        first = next((i for i, c in enumerate(hits[:5], 1) if q.relevant(c)), None)
        out["recall@1"].append(float(first == 1))
        out["recall@5"].append(float(first is not None))
        out["recall_adjacent@5"].append(float(first is not None or q.relevant_adjacent(hits[:5])))
    return {k: round(float(np.mean(v)), 3) for k, v in out.items()}


def plain_baselines(docs: Path, queries: list[Any], tmp: Path) -> dict[str, dict[str, float]]:
    import lancedb

    from tailorlm.rag.embedding import EmbedderConfig, build_embedder

    chunks = char_chunks(docs)
    db = lancedb.connect(str(tmp / "bm25"))
    table = db.create_table("c", data=[{"i": i, "text": c["text"]} for i, c in enumerate(chunks)], mode="overwrite")
    table.create_fts_index("text")
    bm25 = []
    for q in queries:
        rows = table.search(q.question, query_type="fts").select(["i"]).limit(5).to_list()
        bm25.append([as_stored(chunks[r["i"]]) for r in rows])
    embedder = build_embedder(EmbedderConfig())
    vectors = embedder.embed([c["text"] for c in chunks])
    qv = embedder.embed([q.question for q in queries])
    top = np.argsort(-(qv @ vectors.T), axis=1)[:, :5]
    dense = [[as_stored(chunks[j]) for j in row] for row in top]
    return {"bm25": score_lists(queries, bm25), "dense": score_lists(queries, dense)}


def tailor_scores(index: Path, queries: list[Any]) -> dict[str, float]:
    from tailorlm.rag.index import Index

    idx = Index.open(index)
    try:
        retriever = idx.retriever()
        t0 = time.perf_counter()
        ranked = [[h.chunk for h in retriever.retrieve(q.question, k=5)] for q in queries]
        ms = (time.perf_counter() - t0) / len(queries) * 1000
    finally:
        idx.close()
    return score_lists(queries, ranked) | {
        "chars@5": round(float(np.mean([sum(len(c.text) for c in r) for r in ranked]))),
        "query_ms": round(ms, 1),
    }


def run_corpus(name: str, root: Path) -> dict[str, Any]:
    from tailorlm.rag.evaluation import load_queries
    from tailorlm.rag.index import Index
    from tailorlm.rag.ingest import ingest
    from tailorlm.rag.tune import adopt, tune

    folder = build_corpus(name, root)
    docs = (folder / "docs").resolve()
    train, test = load_queries(folder / "questions-train.jsonl"), load_queries(folder / "questions-test.jsonl")
    result: dict[str, Any] = plain_baselines(docs, test, root / f"{name}-plain")
    idx = Index.open(root / f"{name}-defaults", create=True)
    try:
        ingest(idx, docs, progress=False)
    finally:
        idx.close()
    result["defaults"] = tailor_scores(root / f"{name}-defaults", test)
    t0 = time.perf_counter()
    tuned = tune(docs, train, root / f"{name}-tune-work", progress=False)
    adopt(tuned, root / f"{name}-tune-work", root / f"{name}-tuned")
    result["tuned"] = tailor_scores(root / f"{name}-tuned", test) | {
        "tune_s": round(time.perf_counter() - t0, 1),
        "chunking": tuned.best.chunking,
        "settings": tuned.best.settings,
        "train_recall@5": {"default": tuned.default.recall, "search_best": max(t.recall for t in tuned.trials)},
        "adopted": tuned.best is not tuned.default,
        "p_value": round(tuned.p_value, 4),
    }
    result["questions"] = {"train": len(train), "test": len(test)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="pydocs and manpages only.")
    parser.add_argument("--corpora", nargs="+", default=None, choices=["pydocs", "manpages", "xquad"])
    parser.add_argument("--work", type=Path, default=None, help="Keep corpora and indexes here (default: temp).")
    args = parser.parse_args()
    names = args.corpora or (["pydocs", "manpages"] if args.quick else ["pydocs", "manpages", "xquad"])
    with tempfile.TemporaryDirectory() as d:
        root = args.work or Path(d)
        root.mkdir(parents=True, exist_ok=True)
        results = {}
        for name in names:
            try:
                results[name] = run_corpus(name, root)
            except subprocess.CalledProcessError as err:
                print(f"{name}: cannot build the corpus here ({err}); skipped", file=sys.stderr)
                continue
            r = results[name]
            print(f"\n{name} ({r['questions']['test']} test questions)", file=sys.stderr)
            for system in ("bm25", "dense", "defaults", "tuned"):
                s = r[system]
                print(f"  {system:9s} recall@1 {s['recall@1']:.3f}  recall@5 {s['recall@5']:.3f}  "
                      f"adjacent@5 {s['recall_adjacent@5']:.3f}  {s.get('chars@5', '')}", file=sys.stderr)  # fmt: skip
    ratios = [r["tuned"]["recall@5"] / max(r["bm25"]["recall@5"], 1e-9) for r in results.values()]
    print(json.dumps({"machine": machine(), "corpora": results, "ratio": round(min(ratios), 3) if ratios else None}))


if __name__ == "__main__":
    main()
