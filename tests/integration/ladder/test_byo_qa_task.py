"""Issue #15's shape end to end, up to training: long papers as .txt documents (several chunks each), eval/train
JSONL with `question` and `answer` (a list of strings), no ids anywhere. `tailor init` (``scaffold``) maps the
columns and says which rungs run; then, for every rung it promised, the ladder's own data preparation runs on a
fresh context, RAFT included: the real index (MiniLM embedder) and the gold passages found by matching answers in
the chunks of long documents. `tests/unit/ladder/test_training_data.py` checks the verdicts against the data
preparation on generated shapes without retrieval; this adds retrieval over multi-chunk documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tailorlm.core.task import Task
from tailorlm.errors import TailorError
from tailorlm.ladder.context import LadderContext
from tailorlm.ladder.preflight import check_rungs
from tailorlm.ladder.rungs import Lora, OptimizedPrompt, RagLora, few_shot_prompt
from tailorlm.ladder.scaffold import scaffold

pytestmark = pytest.mark.integration

# Hand-written "papers": each paragraph states one measured fact, so each answer occurs in one place only.
TOPICS = {
    "soil-microbes": ("soil microbe", "nitrogen uptake", "mg per gram", "Rothamsted plots"),
    "glacier-melt": ("glacier", "annual melt rate", "metres per year", "the Aletsch station"),
    "battery-ageing": ("battery cell", "capacity fade", "percent per cycle", "the Ulm test bench"),
}
FILLER = (
    "The samples were prepared following the protocol of the previous season, and every measurement was repeated "
    "three times by two independent teams to rule out observer effects. Calibration drift was checked each morning "
    "against a reference standard kept in a sealed container, and no drift beyond the tolerance was recorded. "
    "The discussion section relates these values to earlier surveys and lists the limitations of the design."
)
N_SECTIONS = 8


def _value(doc: int, section: int) -> str:
    return f"{17 + 13 * doc + 7 * section}.{(3 * section + doc) % 10}"


def _paper(doc: int, key: str) -> str:
    subject, quantity, unit, site = TOPICS[key]
    title = f"Measurements of {quantity} in {subject} studies at {site}"
    sections = [
        f"Section {s + 1}. In trial {chr(65 + s)} of the {subject} series at {site}, the {quantity} reached "
        f"{_value(doc, s)} {unit}, measured under condition {s + 1}. {FILLER}"
        for s in range(N_SECTIONS)
    ]
    return title + "\n\n" + "\n\n".join(sections) + "\n"


def _qa(doc: int, key: str, s: int) -> dict:
    subject, quantity, unit, _ = TOPICS[key]
    return {
        "question": f"What {quantity} did trial {chr(65 + s)} of the {subject} series reach?",
        "answer": [f"{_value(doc, s)} {unit}", _value(doc, s)],
    }


def _task_folder(root: Path) -> Path:
    (root / "docs").mkdir(parents=True)
    for d, key in enumerate(TOPICS):
        (root / "docs" / f"{key}.txt").write_text(_paper(d, key), encoding="utf-8")
    keys = list(TOPICS)
    # Split by paper: the first two papers' questions train, the third's evaluate.
    train = [_qa(d, keys[d], s) for d in (0, 1) for s in range(N_SECTIONS)]
    train.append({"question": "Which journal published the follow-up?", "answer": ["Annals of Nowhere"]})  # not there
    evals = [_qa(2, keys[2], s) for s in range(N_SECTIONS)]
    for name, rows in (("train", train), ("eval", evals)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


def test_every_rung_init_promises_builds_its_data_raft_gold_from_long_documents(tmp_path: Path) -> None:
    folder = _task_folder(tmp_path / "papers")
    result = scaffold(folder, eval=folder / "eval.jsonl", train=folder / "train.jsonl", documents=folder / "docs")
    assert result.task.eval.fields == {"input": "question", "reference": "answer"}
    assert result.task.train is not None and result.task.train.fields == result.task.eval.fields
    promised = {r.name for r in result.rungs if r.applies}
    # 17 training records are too few for the prompt search's default pool and dev split: init says so. F1 scores
    # a sampled answer against its reference, so online RL (a verifiable reward) applies.
    assert promised == {"zero-shot", "few-shot", "rag", "rag-few-shot", "lora", "rag-lora", "rl"}, result.rungs
    with pytest.raises(TailorError):
        OptimizedPrompt().prepare(_context(result.task, tmp_path))
    # A user who shrinks the search (as task.yaml's ladder block allows) gets it: the same check now says yes.
    with (folder / "task.yaml").open("a") as f:
        f.write("ladder: {optimize: {pool_size: 6, dev_size: 6}}\n")
    task = Task.load(folder / "task.yaml")
    assert {c.name for c in check_rungs(task) if c.runs} == promised | {"optimized-prompt"}

    ctx = _context(task, tmp_path)  # fresh: nothing carried over from the checks
    assert few_shot_prompt(ctx).few_shot  # few-shot and RAG + few-shot
    assert OptimizedPrompt().prepare(ctx)
    lora = Lora().training_records(ctx)
    assert len(lora) == 17 and lora[0]["messages"][-1]["content"] == train_first_answer(folder)

    index = ctx.index()
    assert index.chunks >= 2 * len(TOPICS), index  # long documents: several chunks each
    # Retrieval was tuned on the 17 training questions (never the 8 eval ones), inside the index build's time.
    tuned = json.loads((tmp_path / "ladder" / "index-tune.json").read_text())
    assert tuned["questions"] == 17 and tuned["k"] == task.ladder.rag.top_k
    assert tuned["best"][f"recall@{tuned['k']}"] >= tuned["default"][f"recall@{tuned['k']}"]
    assert (index.location / "index.yaml").is_file() and not (tmp_path / "ladder" / ".index.tune-work").exists()
    assert ctx.index() is index  # built once per ladder
    records = RagLora().training_records(ctx)
    counts = ctx.records["rag-lora/counts"][0]
    # Every answer that is in the papers is matched to its passage; the one that is not is skipped and counted.
    assert counts["written"] == 16 and counts["unmatched"] == 1 and counts["gold_given"] == 0, counts
    assert len(records) == 16
    for r in records:
        meta = r["metadata"]
        answer = r["messages"][-1]["content"]
        assert meta["gold"] in ("exact", "normalized", "neighbours", "overlap")
        if meta["oracle"]:  # the gold passage is shown, it holds the answer, and the answer cites it
            value = answer.split(" ")[0]
            assert value in r["messages"][0]["content"]
            assert answer.endswith("]")


def _context(task: Task, root: Path) -> LadderContext:
    return LadderContext(task=task, config=task.ladder, model="default", dir=root / "ladder", progress=False)


def train_first_answer(folder: Path) -> str:
    return json.loads((folder / "train.jsonl").read_text().splitlines()[0])["answer"][0]
