"""Run directories: what they record, how they end, and how readers judge runs whose process died."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from pydantic import Field

from tailorlm.core import run as run_mod
from tailorlm.core.config import StrictModel
from tailorlm.core.run import Run, compare_runs, describe_run, list_runs, load_run, read_run
from tailorlm.errors import RunError

pytestmark = pytest.mark.unit


class Cfg(StrictModel):
    lr: float = Field(1e-4, description="Learning rate.")
    paths: list[Path] = Field(default_factory=lambda: [Path("a.jsonl")], description="Data.")


def meta(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def test_create_writes_run_dir(tmp_path: Path) -> None:
    with Run.create("sft lora", root=tmp_path, config=Cfg(), seed=7, parent="base/system.yaml", kind="sft") as run:
        assert run.path.parent == tmp_path
        assert run.id.endswith("-sft-lora") and run.id[:15].replace("-", "").isdigit()
        m = meta(run.path)
        assert m["status"] == "running" and m["finished_at"] is None
        assert (m["name"], m["kind"], m["seed"], m["parent"]) == ("sft lora", "sft", 7, "base/system.yaml")
        assert m["pid"] == os.getpid() and m["hostname"]
        assert m["config"] == {"lr": 1e-4, "paths": ["a.jsonl"]}
        assert yaml.safe_load((run.path / "config.yaml").read_text()) == m["config"]
        assert m["versions"]["python"] and "pydantic" not in m["versions"]
        assert "transformers" in m["versions"]
        assert m["hardware"]["cpu_count"] >= 1 and m["hardware"]["ram_total_bytes"] > 0
        assert "git" in m  # None outside a repo (or one without commits); never an exception
        assert run.artifacts == run.path / "artifacts" and run.artifacts.is_dir()
        assert (run.path / "heartbeat").is_file()

        run.record_dataset("train", "data/train.jsonl", "sha256:abc", 120)
        run.log_metrics({"loss": 2.0}, step=1)
        run.log_metrics({"loss": 1.5}, step=2)
        run.write_metrics({"f1": 0.4})
        run.write_metrics({"em": 0.3})
        logging.getLogger("tailorlm.train").info("hello from the recipe")
    m = meta(run.path)
    assert m["status"] == "complete" and m["finished_at"] and m["error"] is None
    assert m["datasets"] == [
        {"name": "train", "path": "data/train.jsonl", "fingerprint": "sha256:abc", "n_records": 120}
    ]
    lines = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert [(x["step"], x["loss"]) for x in lines] == [(1, 2.0), (2, 1.5)]
    assert json.loads((run.path / "metrics.json").read_text()) == {"f1": 0.4, "em": 0.3}
    log = (run.path / "logs" / "run.log").read_text()
    assert "hello from the recipe" in log and "complete" in log
    # The handler is detached when the run ends: later logging must not reach this run's file.
    logging.getLogger("tailorlm.train").warning("after the run")
    assert "after the run" not in (run.path / "logs" / "run.log").read_text()


def test_config_dict_and_hardware_passed_in(tmp_path: Path) -> None:
    with Run.create("x", root=tmp_path, config={"p": Path("/a")}, hardware={"device": "cuda:0"}) as run:
        pass
    m = meta(run.path)
    assert m["config"] == {"p": "/a"} and m["hardware"]["device"] == "cuda:0"
    bare = Run.create("noconf", root=tmp_path)
    bare.finish()
    assert not (bare.path / "config.yaml").exists() and meta(bare.path)["config"] is None


def test_failed_run_stores_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError), Run.create("boom", root=tmp_path) as run:
        raise ValueError("bad batch")
    m = meta(run.path)
    assert m["status"] == "failed" and m["error"] == "ValueError: bad batch" and m["finished_at"]
    assert "bad batch" in (run.path / "logs" / "run.log").read_text()
    assert read_run(run.path).status == "failed"


def test_keyboard_interrupt_marks_interrupted(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), Run.create("ctrl-c", root=tmp_path) as run:
        raise KeyboardInterrupt
    assert meta(run.path)["status"] == "interrupted"


def test_ids_are_unique_within_one_second(tmp_path: Path) -> None:
    runs = [Run.create("same", root=tmp_path) for _ in range(3)]
    for r in runs:
        r.finish()
    assert len({r.id for r in runs}) == 3
    # All three may fall in one second; then the later ones carry -2, -3.
    assert len({p.name for p in tmp_path.iterdir()}) == 3


def test_finish_twice_is_harmless(tmp_path: Path) -> None:
    run = Run.create("x", root=tmp_path)
    run.finish("complete")
    run.finish("failed", "late")
    assert meta(run.path)["status"] == "complete"


def _fake_running(tmp_path: Path, name: str, **overrides: object) -> Path:
    run = Run.create(name, root=tmp_path)
    run.finish()
    m = meta(run.path)
    m.update(status="running", finished_at=None, **overrides)
    (run.path / "run.json").write_text(json.dumps(m))
    return run.path


def test_running_with_dead_pid_reads_interrupted(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = _fake_running(tmp_path, "dead", pid=int(done.stdout))
    info = load_run(path)
    assert info.status == "interrupted" and "died" in str(info.error)
    assert meta(path)["status"] == "running"  # readers never rewrite the run


def test_running_with_live_pid_reads_running_unless_pid_reused(tmp_path: Path) -> None:
    assert read_run(_fake_running(tmp_path, "alive")).status == "running"
    # Our pid but a different start time: a new process that reused the number.
    reused = _fake_running(tmp_path, "reused", pid_started_at=12345.0)
    assert read_run(reused).status == "interrupted"


def test_other_host_uses_heartbeat(tmp_path: Path) -> None:
    path = _fake_running(tmp_path, "remote", hostname="elsewhere", pid=1)
    (path / "heartbeat").touch()
    assert read_run(path).status == "running"
    old = time.time() - run_mod.HEARTBEAT_STALE_S - 10
    os.utime(path / "heartbeat", (old, old))
    assert read_run(path).status == "interrupted"
    (path / "heartbeat").unlink()
    assert read_run(path).status == "interrupted"


_CHILD = """
import sys, time
from tailorlm.core.run import Run
run = Run.create("victim", root=sys.argv[1], kind="sft")
run.log_metrics({"loss": 1.0}, step=1)
print(run.id, flush=True)
time.sleep(60)
"""


def test_sigkilled_run_reads_interrupted(tmp_path: Path) -> None:
    """A real process creates a run and is SIGKILLed: on disk it says running; readers say interrupted."""
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        assert run_id, "child did not create its run"
        assert load_run(run_id, tmp_path).status == "running"  # alive: it really is running
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert meta(tmp_path / run_id)["status"] == "running"
    info = load_run(run_id, tmp_path)
    assert info.status == "interrupted"
    assert [r.status for r in list_runs(tmp_path)] == ["interrupted"]
    assert info.metrics == {"loss": 1.0}  # no metrics.json: the last logged values stand in


def test_list_runs_newest_first_and_tolerates_corrupt(tmp_path: Path) -> None:
    first = Run.create("first", root=tmp_path)
    first.finish()
    time.sleep(0.01)
    second = Run.create("second", root=tmp_path)
    second.finish()
    (tmp_path / "20990101-000000-empty").mkdir()
    garbage = tmp_path / "20990101-000001-garbage"
    garbage.mkdir()
    (garbage / "run.json").write_text("{not json")
    (tmp_path / ".tmp.partial").mkdir()  # atomic-write leftovers are not runs
    (tmp_path / "stray.txt").write_text("x")

    infos = list_runs(tmp_path)
    by_id = {i.id: i for i in infos}
    assert set(by_id) == {first.id, second.id, "20990101-000000-empty", "20990101-000001-garbage"}
    assert by_id["20990101-000000-empty"].status == "corrupt"
    assert "missing" in str(by_id["20990101-000000-empty"].error)
    assert by_id["20990101-000001-garbage"].status == "corrupt"
    good = [i.id for i in infos if i.status != "corrupt"]
    assert good == [second.id, first.id]
    assert list_runs(tmp_path / "nothing-here") == []


def test_load_run_resolution(tmp_path: Path) -> None:
    a = Run.create("alpha", root=tmp_path)
    a.finish()
    b = Run.create("beta", root=tmp_path)
    b.finish()
    assert load_run(a.id, tmp_path).id == a.id
    assert load_run(a.path).id == a.id
    assert load_run(a.path / "run.json").id == a.id
    assert load_run("beta", tmp_path).id == b.id  # by run name
    assert load_run("latest", tmp_path).id == b.id
    assert load_run(a.id[:-2], tmp_path).id == a.id  # unique prefix
    with pytest.raises(RunError, match="matches 2 runs"):
        load_run(a.id[:8], tmp_path)
    with pytest.raises(RunError, match="no run matches 'zzz'"):
        load_run("zzz", tmp_path)
    with pytest.raises(RunError, match="holds no runs"):
        load_run("x", tmp_path / "empty")


def test_exact_id_beats_prefix(tmp_path: Path) -> None:
    runs = [Run.create("same", root=tmp_path) for _ in range(2)]
    for r in runs:
        r.finish()
    ids = sorted(r.id for r in runs)
    if not ids[1].startswith(ids[0]):
        pytest.skip("the two runs fell in different seconds")
    assert load_run(ids[0], tmp_path).id == ids[0]


def test_describe_and_lineage(tmp_path: Path) -> None:
    with Run.create("base", root=tmp_path, config={"a": 1}) as base:
        (base.artifacts / "system.yaml").write_text("name: base\n")
        base.write_metrics({"eval": {"f1": 0.2}})
    with Run.create("child", root=tmp_path, parent=str(base.artifacts / "system.yaml")) as child:
        child.write_metrics({"eval": {"f1": 0.5}, "loss": 1.0})
    with Run.create("grandchild", root=tmp_path, parent=child.id) as grandchild:
        pass

    d = describe_run(grandchild.id, tmp_path)
    assert d["lineage"]["ancestors"] == [child.id, str(base.artifacts / "system.yaml")]
    d = describe_run(base.id, tmp_path)
    assert d["config"] == {"a": 1} and "config" not in d["meta"]
    assert d["metrics"] == {"eval.f1": 0.2}
    assert d["artifacts"] == [{"path": "artifacts/system.yaml", "bytes": len("name: base\n")}]
    assert d["lineage"]["children"] == [child.id]
    json.dumps(d)  # JSON-safe for --json


def test_compare_runs_aligns_metrics(tmp_path: Path) -> None:
    with Run.create("a", root=tmp_path) as a:
        a.write_metrics({"f1": 0.2})
    with Run.create("b", root=tmp_path) as b:
        b.write_metrics({"f1": 0.5, "em": 0.4})
    c = compare_runs([a.id, b.id], tmp_path)
    assert [r["id"] for r in c["runs"]] == [a.id, b.id]
    assert c["metrics"] == {"f1": {a.id: 0.2, b.id: 0.5}, "em": {a.id: None, b.id: 0.4}}
    with pytest.raises(RunError):
        compare_runs([], tmp_path)


def test_torn_metrics_jsonl_is_tolerated(tmp_path: Path) -> None:
    run = Run.create("torn", root=tmp_path)
    run.log_metrics({"loss": 3.0}, step=1)
    run.finish()
    with open(run.path / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "loss"')  # a crash mid-line
    assert read_run(run.path).metrics == {"loss": 3.0}
