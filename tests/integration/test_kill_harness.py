"""Crash consistency of every long command: SIGKILL it (a real `tailor` process) at a point, check that nothing on
disk looks complete but isn't and that no cache is corrupt, then run it again and check that it finishes: training
resumes from its last complete checkpoint, ingest and eval reuse what reached the disk, the ladder keeps its
finished rungs.

CI runs one or two deterministic kill points per command (a checkpoint, a cached chunk, a rung's result appearing);
``-m slow`` adds seeded random delays within each command's measured run time. The table of kill points and
outcomes is printed at the end of the session (killharness.summary); docs/robustness.md keeps the totals.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from integration.ladder.test_ladder import RUNGS
from integration.ladder.test_ladder import write_task as write_ladder_task
from integration.rag.test_rag_pipeline import _station_files, _visible_chunks, write_files
from integration.test_eval_runner import _write_task as write_eval_task
from killharness import (
    TAILOR,
    KillPoint,
    first_match,
    jsonl_records,
    random_points,
    record,
    run,
    scan,
    spawn_and_kill,
)
from tailorlm.core.run import list_runs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One TAILOR_CACHE for the commands that only read it (the embedder's ONNX export happens once)."""
    return tmp_path_factory.mktemp("kill-cache")


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "TAILOR_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _assert_clean(*roots: Path) -> dict[str, str]:
    """No artifact that looks complete but isn't; returns each run's status as readers see it."""
    found = scan(*roots)
    assert found.problems == [], "\n".join(found.problems)
    return found.runs


def _ok(result: object) -> None:
    assert result.returncode == 0, result.stderr[-4000:]  # type: ignore[attr-defined]


# --- training: sft and pretrain resume from the last complete checkpoint; classify starts a new run ----------------

CHATS = [("what is two plus two?", "four"), ("capital of France?", "Paris"), ("say hello", "hello, world!")]
SENTENCES = ["The lighthouse keeper lit the lamp at dusk.", "Ships passed the rocks safely all night.",
             "In the morning the keeper wrote the log.", "Storms came often in the autumn months."]  # fmt: skip
POSITIVE = ["a wonderful, moving film", "great acting and a clever plot", "I loved every minute", "superb"]
NEGATIVE = ["a dull, tedious mess", "terrible acting and no plot", "I hated every minute", "awful"]
STEPS = 6


@dataclass
class Training:
    command: str  # "sft", "pretrain", "classify"
    recipe: Path
    runs: Path

    @property
    def argv(self) -> list[str]:
        return [*TAILOR, "train", self.command, str(self.recipe), "--runs-root", str(self.runs)]


def _training(kind: str, folder: Path, model: Path) -> Training:
    folder.mkdir(parents=True, exist_ok=True)
    training = {"max_steps": STEPS, "batch_size": 2, "save_steps": 2}
    if kind == "sft":
        rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
                for q, a in CHATS * 6]  # fmt: skip
        (folder / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        recipe = {"name": "kill-sft", "model": str(model), "data": {"path": str(folder / "chat.jsonl")},
                  "eval_fraction": 0, "canaries": {"enabled": False}, "training": training}  # fmt: skip
    elif kind == "pretrain":
        for i in range(10):
            (folder / "corpus").mkdir(exist_ok=True)
            (folder / "corpus" / f"doc{i}.txt").write_text(" ".join(SENTENCES[(i + j) % 4] for j in range(6)))
        recipe = {"name": "kill-pretrain", "model": str(model), "data": {"path": str(folder / "corpus")},
                  "eval_fraction": 0.2, "canaries": {"enabled": False},
                  "training": {**training, "max_length": 32, "eval_steps": 2}}  # fmt: skip
    else:
        rows = [(POSITIVE[i % 4], 1) if i % 2 else (NEGATIVE[i % 4], 0) for i in range(24)]
        (folder / "train.tsv").write_text("".join(f"{t}\t{y}\n" for t, y in rows))
        recipe = {"name": "kill-classify", "model": str(model), "problem": "classification",
                  "labels": ["negative", "positive"],
                  "data": {"path": str(folder / "train.tsv"), "columns": ["text", "label"]},
                  "training": {"max_steps": STEPS, "batch_size": 4}}  # fmt: skip
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return Training(kind, folder / "recipe.yaml", folder / "runs")


def _latest_complete_checkpoint(run_dir: Path) -> int | None:
    from tailorlm.train.sft.recipe import latest_checkpoint

    found = latest_checkpoint(run_dir / "checkpoints")
    return int(found.name.split("-")[1]) if found else None


def _kill_and_retrain(t: Training, point: KillPoint, env: dict[str, str]) -> None:
    killed = spawn_and_kill(t.argv, env, point)
    statuses = _assert_clean(t.runs)
    runs = sorted(p for p in t.runs.iterdir() if (p / "run.json").is_file()) if t.runs.exists() else []
    checkpoint = _latest_complete_checkpoint(runs[0]) if runs else None
    state = f"checkpoint-{checkpoint}" if checkpoint else ("run, no checkpoint" if runs else "nothing")

    if list(statuses.values()) == ["complete"]:
        # Finished before the point, or killed after run.json said complete (printing the table, interpreter exit):
        # the run is whole (the scan checked its metrics and System), so there is nothing to recover.
        assert not killed.killed or (runs[0] / "artifacts" / "system.yaml").is_file()
        how = "- (killed after it completed)" if killed.killed else "- (ended before the kill)"
        record(f"train {t.command}", point, killed, "complete run", how, ok=True)
        return
    assert killed.killed and "complete" not in statuses.values(), statuses  # a killed run never reads complete
    if t.command == "classify" or not runs:  # classify saves once, at the end: a new run starts over
        again = run(t.argv, env)
        _ok(again)
        statuses = _assert_clean(t.runs)
        assert sorted(statuses.values()).count("complete") == 1, statuses
        how = "new run, complete" + (f"; killed run reads {statuses[str(runs[0])]}" if runs else "")
        record(f"train {t.command}", point, killed, state, how, ok=True)
        return

    run_dir = runs[0]
    again = run([*TAILOR, "train", t.command, "--resume", str(run_dir)], env)
    _ok(again)
    assert _assert_clean(t.runs) == {str(run_dir): "complete"}
    meta = json.loads((run_dir / "run.json").read_text())
    resumed_at = datetime.fromisoformat(meta["resumed_at"][-1]).timestamp()
    steps = [r["step"] for r in jsonl_records(run_dir / "metrics.jsonl") if "loss" in r and r["time"] >= resumed_at]
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == STEPS
    # Resumed exactly where the last complete checkpoint left off: no step before it is trained again (and none at
    # all when the kill came after the last checkpoint, during the final save).
    if checkpoint == STEPS:
        if steps:  # killed after the last checkpoint, in the final save: there is nothing left to train
            record(f"train {t.command}", point, killed, state, f"trained extra step(s) {steps}", ok=False)
        assert not steps, f"resumed after the last checkpoint but trained step(s) {steps}"
        how = "no steps left: saved, complete"
    else:
        assert steps and min(steps) == (checkpoint or 0) + 1, steps
        how = f"resumed at step {min(steps)}, complete"
    record(f"train {t.command}", point, killed, state, how, ok=True)


def _training_points(kind: str) -> list[Callable[[Path], KillPoint]]:
    """Deterministic kill points, each a function of the runs folder it watches."""
    if kind == "classify":
        return [lambda runs: KillPoint.when_file("first step logged", first_match(runs, "*/metrics.jsonl"))]
    ckpt = "*/checkpoints/checkpoint-{}"
    points: list[Callable[[Path], KillPoint]] = [
        lambda runs: KillPoint.when_file(
            "checkpoint-2 complete", first_match(runs, ckpt.format(2) + "/trainer_state.json")
        )
    ]
    if kind == "sft":
        # The folder exists, its trainer_state.json (written last) not yet: a kill mid-save, which resume must skip.
        points.append(lambda runs: KillPoint.when_file("checkpoint-4 being saved", first_match(runs, ckpt.format(4))))
    return points


@pytest.mark.parametrize("kind", ["sft", "pretrain", "classify"])
def test_killed_training_resumes_or_restarts_cleanly(
    kind: str, tmp_path: Path, tiny_model_dir: Path, shared_cache: Path
) -> None:
    for i, make_point in enumerate(_training_points(kind)):
        t = _training(kind, tmp_path / f"p{i}", tiny_model_dir)
        _kill_and_retrain(t, make_point(t.runs), _env(shared_cache))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sft", "pretrain", "classify"])
def test_training_killed_at_random_points(kind: str, tmp_path: Path, tiny_model_dir: Path, shared_cache: Path) -> None:
    env = _env(shared_cache)
    clean = _training(kind, tmp_path / "clean", tiny_model_dir)
    start = time.monotonic()
    _ok(run(clean.argv, env))
    for i, point in enumerate(
        random_points(seed=["sft", "pretrain", "classify"].index(kind), run_s=time.monotonic() - start, n=3)
    ):
        _kill_and_retrain(_training(kind, tmp_path / f"r{i}", tiny_model_dir), point, env)


# --- rag ingest: whole documents or none, a resumed ingest adds only the rest; the embedder cache stays whole -------

N_DOCS = 300


def _ingest_argv(docs: Path, index: Path) -> list[str]:
    return [*TAILOR, "rag", "ingest", str(docs), "--index", str(index), "--json", "--quiet"]


def _whole_documents(index: Path, docs: Path) -> int:
    """Every document the index lists has all of its chunks visible, and no other document has any; returns how
    many are in (the check of test_rag_pipeline's in-process kill, on the index a killed CLI left)."""
    from tailorlm.rag.chunking import chunk_document
    from tailorlm.rag.index import INDEX_CONFIG, Index
    from tailorlm.rag.readers import Document, iter_documents

    if not (index / INDEX_CONFIG).is_file():  # killed before the index existed (e.g. during the embedder export)
        return 0
    idx = Index.open(str(index))
    try:
        done = idx.store.document_hashes()
        for d in iter_documents(docs):
            if not isinstance(d, Document):
                continue
            expected = sorted((c.chunk_id, c.text, c.start, c.end)
                              for c in chunk_document(d, idx.config.chunking, idx.embedder.count_tokens))  # fmt: skip
            assert _visible_chunks(idx, d.doc_id) == (expected if d.doc_id in done else []), d.doc_id
            if d.doc_id in done:
                assert done[d.doc_id] == d.hash
        return len(done)
    finally:
        idx.close()


def _kill_and_reingest(docs: Path, index: Path, cache: Path, point: KillPoint) -> None:
    env = _env(cache)
    killed = spawn_and_kill(_ingest_argv(docs, index), env, point)
    _assert_clean(cache, index)
    exported = [p for p in (cache / "embedders").glob("*") if not p.name.startswith(".")]
    try:
        done = _whole_documents(index, docs)
    except Exception as err:  # an index the kill left unopenable is a failure, reported with the kill point
        record("rag ingest", point, killed, f"index unreadable: {err}", "-", ok=False)
        raise
    state = f"{done}/{N_DOCS} docs whole" + ("" if exported else ", no embedder export")
    again = run(_ingest_argv(docs, index), env)
    _ok(again)
    report = json.loads(again.stdout)
    assert (report["added"], report["unchanged"]) == (N_DOCS - done, done), report
    assert _whole_documents(index, docs) == N_DOCS
    _assert_clean(cache, index)
    record("rag ingest", point, killed, state, f"added {report['added']}, kept {done}", ok=True)


def test_killed_ingest_resumes_with_whole_documents_and_a_whole_embedder_cache(tmp_path: Path) -> None:
    docs = write_files(tmp_path / "docs", _station_files(N_DOCS))
    # 1. A fresh cache, killed while the embedder's ONNX export is being written: the next run exports again.
    cache = tmp_path / "cache"
    exporting = KillPoint.when_file("embedder export in progress", first_match(cache / "embedders", ".*partial"))
    _kill_and_reingest(docs, tmp_path / "index1", cache, exporting)
    # 2. The cache is warm: killed mid-ingest, 1.5 s after the store's tables appear (some batches may be in).
    tables = first_match(tmp_path / "index2", "**/*.lance")
    storing = KillPoint.when_file("store tables appear + 1.5 s", tables, delay_s=1.5)
    _kill_and_reingest(docs, tmp_path / "index2", cache, storing)


@pytest.mark.slow
def test_ingest_killed_at_random_points(tmp_path: Path, shared_cache: Path) -> None:
    docs = write_files(tmp_path / "docs", _station_files(N_DOCS))
    # Warm the embedder cache first: the one-time export would stretch the measured time past every later run's.
    _ok(
        run(
            _ingest_argv(write_files(tmp_path / "warm", _station_files(1)), tmp_path / "warm-index"),
            _env(shared_cache),
        )
    )
    start = time.monotonic()
    _ok(run(_ingest_argv(docs, tmp_path / "clean"), _env(shared_cache)))
    for i, point in enumerate(random_points(seed=14, run_s=time.monotonic() - start, n=3)):
        _kill_and_reingest(docs, tmp_path / f"index{i}", shared_cache, point)


# --- eval: whatever reached the prediction cache is reused --------------------------------------------------------


def _eval_argv(model: Path, task: Path, root: Path) -> list[str]:
    return [*TAILOR, "eval", str(model), "--task", str(task), "--root", str(root), "--batch-size", "1", "--json"]


def _kill_and_reevaluate(model: Path, folder: Path, point_for: Callable[[Path], KillPoint]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    task, cache, root = write_eval_task(folder), folder / "cache", folder / "runs"
    env = _env(cache)
    point = point_for(cache)
    killed = spawn_and_kill(_eval_argv(model, task, root), env, point)
    statuses = _assert_clean(cache, root)
    cached = sum(len(jsonl_records(p)) for p in (cache / "predictions").glob("*.jsonl"))
    first = [r.status for r in list_runs(root)]
    # On a fast machine the kill can land after the run was marked complete (while the process exits): that run
    # must then really be whole. Any other killed run is absent or marked interrupted, never complete.
    finished_first = first == ["complete"]
    if finished_first:
        assert cached == 24, (statuses, cached)
    else:
        assert killed.killed and first in ([], ["interrupted"]), statuses
    again = run(_eval_argv(model, task, root), env)
    _ok(again)
    metrics = json.loads(again.stdout)
    assert metrics["cost"]["generated"] == 24 - cached  # only what did not reach the cache is generated again
    # The rerun's run, plus the first one when it finished before the kill point.
    assert list(_assert_clean(cache, root).values()).count("complete") == (2 if finished_first else 1)
    record("eval", point, killed, f"{cached}/24 predictions cached", f"generated {24 - cached}, complete", ok=True)


def test_killed_eval_resumes_generating_only_the_missing(tiny_model_dir: Path, tmp_path: Path) -> None:
    # Was test_eval_runner's in-process kill after the second chunk: now the CLI, killed once a chunk is fsynced.
    def after_a_chunk(cache: Path) -> KillPoint:
        return KillPoint.when_file(
            "first chunk cached", lambda: any(jsonl_records(p) for p in (cache / "predictions").glob("*.jsonl"))
        )

    _kill_and_reevaluate(tiny_model_dir, tmp_path, after_a_chunk)


@pytest.mark.slow
def test_eval_killed_at_random_points(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "clean").mkdir()
    task = write_eval_task(tmp_path / "clean")
    start = time.monotonic()
    _ok(run(_eval_argv(tiny_model_dir, task, tmp_path / "clean" / "runs"), _env(tmp_path / "clean" / "cache")))
    for i, point in enumerate(random_points(seed=5, run_s=time.monotonic() - start, n=3)):
        _kill_and_reevaluate(tiny_model_dir, tmp_path / f"r{i}", lambda cache, p=point: p)


# --- ladder: finished rungs are kept, the rest are built --------------------------------------------------------


def _kill_and_reclimb(model: Path, folder: Path, point_for: Callable[[Path], KillPoint]) -> None:
    write_ladder_task(folder, model)
    out, cache = folder / "ladder", folder / "cache"
    argv = [*TAILOR, "ladder", str(folder / "task.yaml"), "--rungs", RUNGS, "--model", str(model), "--out", str(out)]
    env = _env(cache)
    point = point_for(out)
    killed = spawn_and_kill(argv, env, point)
    _assert_clean(out, cache)
    done = {p.parent.name: p.stat().st_mtime_ns for p in (out / "rungs").glob("*/result.json")}
    again = run([*argv, "--json"], env)
    _ok(again)
    rungs = {r["name"]: r for r in json.loads(again.stdout)["rungs"]}
    assert all(r["status"] == "complete" for r in rungs.values()), rungs
    for name, mtime in done.items():  # a finished rung is read back, not rebuilt
        assert rungs[name]["cached"], name
        assert (out / "rungs" / name / "result.json").stat().st_mtime_ns == mtime
    _assert_clean(out, cache)
    rebuilt = [n for n, r in rungs.items() if not r["cached"]]
    record(
        "ladder",
        point,
        killed,
        f"{len(done)} rungs done: {','.join(done) or '-'}",
        f"built {','.join(rebuilt) or '-'}",
        ok=True,
    )


def test_killed_ladder_resumes_without_redoing_finished_rungs(tiny_model_dir: Path, tmp_path: Path) -> None:
    # Was test_ladder's kill once few-shot's result.json appeared.
    def after_few_shot(out: Path) -> KillPoint:
        return KillPoint.when_file("few-shot result written", first_match(out, "rungs/few-shot/result.json"))

    _kill_and_reclimb(tiny_model_dir, tmp_path, after_few_shot)


@pytest.mark.slow
def test_ladder_killed_at_random_points(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "clean").mkdir()
    write_ladder_task(tmp_path / "clean", tiny_model_dir)
    argv = [*TAILOR, "ladder", str(tmp_path / "clean" / "task.yaml"), "--rungs", RUNGS, "--model", str(tiny_model_dir),
            "--out", str(tmp_path / "clean" / "ladder")]  # fmt: skip
    start = time.monotonic()
    _ok(run(argv, _env(tmp_path / "clean" / "cache")))
    for i, point in enumerate(random_points(seed=3, run_s=time.monotonic() - start, n=3)):
        _kill_and_reclimb(tiny_model_dir, tmp_path / f"r{i}", lambda out, p=point: p)
