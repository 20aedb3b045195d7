"""RAFT data from training records with only a question and reference answers (issue #15): the gold passage is
found by the answer in a real LanceDB index (the packaged embedder, small chunks so documents have boundaries),
exactly, normalized, across a chunk boundary, or by a long answer's token overlap; the rest are counted and skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tailorlm.cli.main import app
from tailorlm.errors import DataError
from tailorlm.rag.chunking import ChunkingConfig
from tailorlm.rag.evaluation import load_queries
from tailorlm.rag.index import Index, IndexConfig
from tailorlm.rag.ingest import ingest
from tailorlm.rag.sft_data import make_sft_records
from tailorlm.rag.types import StoredChunk

pytestmark = pytest.mark.integration

DOCS = {
    "lichens.txt": (
        "Lichens on basalt grow slowly. The samples were collected at 2,100 metres on the northern slope during "
        "the dry season of 2019. Growth rates were measured every month with calibrated photographs of each "
        "colony. The median radial growth was 0.8 mm per year, lower than the growth measured at sea level. "
        "Colonies facing south grew faster than colonies facing north, which the authors attribute to the "
        "longer hours of sunlight on the southern faces. Crustose species dominated the upper plots, while "
        "foliose species were common only near the stream. Two colonies died after a rockfall in March. "
        "The team recommends a longer survey of at least ten years before drawing conclusions about climate."
    ),
    "glaciers.txt": (
        "The glacier retreated 40 metres between 2015 and 2022. Meltwater discharge peaked in late July each "
        "year, two weeks earlier than in the 1990s. Ground-penetrating radar showed the ice was 180 metres thick "
        "at the centre line. Debris cover slowed the melt on the eastern tongue by roughly a third. The survey "
        "used drones for the upper basin, where crevasses made walking unsafe. Summer temperatures at the "
        "terminus rose by 1.2 degrees over the period. The authors expect the eastern tongue to separate from "
        "the main glacier within a decade, forming a dead-ice body that will melt in place."
    ),
    "soils.txt": (
        "Alpine soils formed on granite are thin and acidic. Organic carbon accumulated fastest under dwarf "
        "shrubs, about twice the rate under grasses. Frost heave sorted the stones into circles on the flat "
        "terraces. Nitrogen was the main limit on plant growth above 2,500 metres. Earthworms were absent from "
        "every plot above the treeline. The pH of the topsoil ranged from 4.1 to 5.3, lowest under the shrubs."
    ),
}


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[StoredChunk]]]:
    folder = tmp_path_factory.mktemp("papers")
    for name, text in DOCS.items():
        (folder / name).write_text(text, encoding="utf-8")
    location = str(tmp_path_factory.mktemp("idx") / "kb")
    # Small chunks with overlap, so the documents have boundaries a sentence can straddle.
    idx = Index.open(location, IndexConfig(chunking=ChunkingConfig(max_tokens=48, overlap_tokens=12)), create=True)
    try:
        ingest(idx, folder, progress=False)
        chunks = idx.store.read_chunks()
    finally:
        idx.close()
    yield location, chunks


def straddling(chunks: list[StoredChunk], doc_id: str) -> tuple[str, str, str]:
    """A span of ``doc_id`` that crosses the boundary after its first chunk (no chunk holds it whole), as whole
    words; and the ids of the two chunks that hold its parts."""
    text = DOCS[doc_id]
    first, second = sorted((c for c in chunks if c.doc_id == doc_id), key=lambda c: c.start)[:2]
    start = text.rfind(" ", 0, second.start - 20) + 1  # from before the second chunk starts...
    end = text.find(" ", first.end + 20)  # ...to past the first one's end
    return text[start:end], first.chunk_id, second.chunk_id


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_gold_passages_are_found_by_the_answer(index: tuple[str, list[StoredChunk]], tmp_path: Path) -> None:
    location, chunks = index
    assert len({c.doc_id for c in chunks}) == 3 and len(chunks) >= 6
    span, first_id, second_id = straddling(chunks, "lichens.txt")
    assert not any(span in c.text for c in chunks)
    rows = [
        # exact: a verbatim phrase
        {"question": "How fast did the lichens grow?", "answer": ["0.8 mm per year"]},
        {"question": "How thick was the glacier ice?", "answer": ["180 metres"]},
        # normalized: case, punctuation and articles differ
        {"question": "Where was nitrogen limiting?", "answer": ["Above 2,500 Metres!"]},
        {"question": "What did frost heave do?", "answer": ["sorted stones into circles"]},
        # neighbours: a long answer across the boundary between the first two chunks
        {"question": "How were the lichen samples collected and measured?", "answer": [span]},
        # overlap: a long answer, lightly edited
        {
            "question": "Why did south-facing colonies grow faster?",
            "answer": [
                "Colonies facing south grew faster than those facing north, attributed to longer hours of "
                "sunlight on the southern faces"
            ],
        },
        # absent from the documents
        {"question": "What is the capital of Peru?", "answer": ["Lima"]},
        {"question": "Who wrote the survey?", "answer": ["Professor Ingrid Halvorsen of Tromsø"]},
    ]
    queries = load_queries(write_rows(tmp_path / "train.jsonl", rows))
    assert all(not q.gold and not q.doc_ids and q.answers for q in queries)
    idx = Index.open(location)
    try:
        records, counts = make_sft_records(idx.retriever(), queries, distractors=2, p_oracle=1.0)
    finally:
        idx.close()
    assert counts["matched_exact"] == 2 and counts["matched_normalized"] == 2
    assert counts["matched_neighbours"] == 1 and counts["matched_overlap"] == 1
    assert counts["unmatched"] == 2 and counts["skipped_no_gold"] == 2 and counts["gold_given"] == 0
    assert counts["written"] == counts["with_oracle"] == 6
    by_q = {r["messages"][0]["content"].rsplit("Question: ", 1)[1]: r for r in records}
    text = {c.chunk_id: c.text for c in chunks}
    for row in rows[:6]:
        r = by_q[row["question"]]
        meta = r["messages"], r["metadata"]
        gold = meta[1]["gold_chunk_id"]
        assert gold in meta[1]["chunk_ids"]  # the gold passage is among the sources...
        n = meta[1]["chunk_ids"].index(gold) + 1
        assert meta[0][1]["content"] == f"{row['answer'][0]} [{n}]"  # ...and the answer cites it
        assert text[gold] in meta[0][0]["content"]
    neighbours = by_q[rows[4]["question"]]["metadata"]
    assert neighbours["gold"] == "neighbours" and neighbours["gold_chunk_id"] in {first_id, second_id}
    # A chunk holding part of the answer is never shown as a distractor.
    assert not {first_id, second_id} - {neighbours["gold_chunk_id"]} & set(neighbours["chunk_ids"])
    assert by_q[rows[0]["question"]]["metadata"]["gold"] == "exact"
    assert by_q[rows[5]["question"]]["metadata"]["gold"] == "overlap"


def test_cli_prints_the_counts_and_refuses_when_almost_none_match(
    index: tuple[str, list[StoredChunk]], tmp_path: Path
) -> None:
    location, _ = index
    rows = [{"question": "How fast did the lichens grow?", "answer": ["0.8 mm per year"]}]
    rows += [{"question": f"Unrelated question {i}?", "answer": [f"answer number {i} is nowhere"]} for i in range(3)]
    res = CliRunner().invoke(
        app, ["rag", "make-sft-data", str(write_rows(tmp_path / "q.jsonl", rows)), "--index", location,
              "--out", str(tmp_path / "raft.jsonl")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "gold passages: 1 by their answer (1 exact)" in res.output
    assert "3 answers not found in the documents" in res.output

    # 1 of 40 (2.5%): the answers do not come from these documents; refused with the fix.
    rows = rows[:1] + [{"question": f"Q{i}?", "answer": [f"nothing {i} here"]} for i in range(39)]
    queries = load_queries(write_rows(tmp_path / "few.jsonl", rows))
    idx = Index.open(location)
    try:
        with pytest.raises(DataError, match="only 1 of 40 training answers") as err:
            make_sft_records(idx.retriever(), queries, depth=5)
    finally:
        idx.close()
    assert "doc_ids" in (err.value.hint or "")
