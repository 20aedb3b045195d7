"""The RAG targets on real data: XQuAD-en retrieval with the default hybrid retriever (docs/rag.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tailorlm.rag.evaluation import evaluate_retrieval, load_queries
from tailorlm.rag.index import Index
from tailorlm.rag.ingest import ingest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def xquad(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = ROOT.parent / "shared" / "data" / "xquad" / "xquad.en.json"
    if not data.is_file():
        pytest.skip(f"XQuAD not found at {data} (only CI and developer machines have ../shared)")
    sys.path.insert(0, str(ROOT / "scripts"))
    from build_xquad_rag import build

    out = tmp_path_factory.mktemp("xquad")
    build(data, out)
    return out


@pytest.mark.parametrize(
    ("layout", "min_r1", "min_r5"),
    [("paragraphs", 0.95, 0.995), ("articles", 0.93, 0.99)],  # articles: long documents the chunker splits
)
def test_hybrid_retrieval_targets(xquad: Path, tmp_path: Path, layout: str, min_r1: float, min_r5: float) -> None:
    index = Index.open(tmp_path / "index", create=True)
    try:
        ingest(index, xquad / layout, progress=False)
        result = evaluate_retrieval(index.retriever(), load_queries(xquad / f"questions-{layout}.jsonl"), (1, 5))
    finally:
        index.close()
    assert result["n"] == 1190
    assert result["metrics"]["recall@1"]["value"] >= min_r1
    assert result["metrics"]["recall@5"]["value"] >= min_r5
