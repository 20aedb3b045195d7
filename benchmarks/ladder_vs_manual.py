"""`tailor ladder` against the commands a user would otherwise type for the same rungs, and a re-run of each.

Both sides build and score the same four rungs of the bundled QA example (zero-shot, few-shot, RAG, RAG + LoRA)
with the default model, each from its own empty cache (the default model's converted weights are copied in, so
neither pays the one-time GGUF conversion):

- **ours**: ``tailor ladder examples/xquad-qa/task.yaml`` (plan included), then the same command again;
- **baseline**: one ``tailor`` process per step, as before the ladder existed: ``eval`` zero-shot, ``eval`` the
  few-shot System, ``rag ingest``, ``rag system``, ``eval`` RAG, ``rag make-sft-data``, ``train sft``,
  ``rag system --system``, ``eval`` RAFT, then ``report``; and all of it again for the re-run (a script has no
  notion of which steps are unchanged). The few-shot System is the one the ladder built, so both sides answer
  the same prompts.

The last line is one JSON object: wall seconds and peak RSS of each side, ``ratio`` (ours / baseline, first run)
and ``rerun_ratio`` (our re-run / our first run).

    python benchmarks/ladder_vs_manual.py --quick      # zero-shot and RAG on 8 questions: about 2 minutes
    python benchmarks/ladder_vs_manual.py              # the demo's four rungs and sizes: about 25 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tailorlm.core.cpu import machine

ROOT = Path(__file__).resolve().parents[1]
TASK = ROOT / "examples" / "xquad-qa" / "task.yaml"


PEAK_MB: dict[str, float] = {}


def tailor(*args: str, env: dict[str, str], side: str) -> None:
    """One `tailor` process; its own peak RSS (``wait4``'s rusage) raises the side's peak."""
    proc = subprocess.Popen([sys.executable, "-m", "tailorlm.cli.main", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    stderr = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"tailor {' '.join(args)} failed:\n{stderr.decode()[-3000:]}")
    PEAK_MB[side] = max(PEAK_MB.get(side, 0.0), usage.ru_maxrss / 1024)


def fresh_cache(folder: Path) -> dict[str, str]:
    from tailorlm.models.default import cache_root

    folder.mkdir(parents=True)
    models = cache_root() / "models"
    if models.is_dir():
        shutil.copytree(models, folder / "models")
    return {**os.environ, "TAILOR_CACHE": str(folder), "HF_HUB_OFFLINE": "1"}


def timed(fn: object) -> float:
    t0 = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="zero-shot and RAG on 8 questions (no training)")
    args = parser.parse_args()
    # --quick keeps the untrained rungs only: training alone would take the three minutes.
    overrides = ["ladder.eval_limit=8", "ladder.canary_limit=10", "ladder.rungs=[zero-shot,rag]"] if args.quick else []
    train = not args.quick
    from tailorlm.core.task import Task

    task = Task.load(TASK, overrides)
    n, k = task.ladder.eval_limit, task.ladder.rag.top_k
    work = Path(tempfile.mkdtemp(prefix="ladder-bench-"))

    # ours: the ladder, then the same ladder again
    env = fresh_cache(work / "cache-ours")
    ladder = ["ladder", str(TASK), *overrides, "--out", str(work / "ladder")]
    first = timed(lambda: tailor(*ladder, env=env, side="ours"))
    rerun = timed(lambda: tailor(*ladder, env=env, side="ours"))
    print(f"ours: first {first:.1f} s, re-run {rerun:.1f} s", file=sys.stderr)
    few_shot = work / "ladder" / "rungs" / "few-shot" / "system" / "system.yaml"

    # baseline: one process per step, from its own empty cache
    env = fresh_cache(work / "cache-manual")
    runs, idx, raft = work / "manual-runs", work / "manual-index", work / "raft.jsonl"
    limit = ["--task", str(TASK), *overrides, "--root", str(runs)] + (["-n", str(n)] if n else [])
    sft = task.ladder.sft
    train_args = [f"data.path={raft}", "eval_fraction=0", f"training.epochs={sft.epochs}",
                  f"canaries.limit={task.ladder.canary_limit}"] + (
        [f"training.max_steps={sft.max_steps}"] if sft.max_steps else [])  # fmt: skip

    def step(*a: str) -> None:
        tailor(*a, env=env, side="baseline")

    def manual() -> None:
        shutil.rmtree(runs, ignore_errors=True)
        step("eval", "run", "default", *limit)
        if train:
            step("eval", "run", str(few_shot), *limit)
        step("rag", "ingest", str(TASK.parent / "docs"), "--index", str(idx), "--quiet")
        step("rag", "system", "--index", str(idx), "--k", str(k), "--out", str(work / "sys-rag"))
        step("eval", "run", str(work / "sys-rag"), *limit)
        if train:
            raft_rungs()
        evals = sorted(p for p in runs.iterdir() if "-eval-" in p.name)
        step("report", *map(str, evals), "--out", str(work / "manual-report"))

    def raft_rungs() -> None:
        step("rag", "make-sft-data", str(TASK.parent / "train.jsonl"), "--index", str(idx), "--out", str(raft),
             "--distractors", str(task.ladder.raft.distractors))  # fmt: skip
        if sft.max_records:  # the same number of records as the ladder trains on
            rows = raft.read_text().splitlines()[: sft.max_records]
            raft.write_text("\n".join(rows) + "\n")
        step("train", "sft", str(ROOT / "recipes" / "sft-raft.yaml"), *train_args, "--runs-root", str(runs))
        trained = max(runs.glob("*-sft-raft"), key=lambda p: p.name) / "artifacts"
        step("rag", "system", "--index", str(idx), "--k", str(k), "--system", str(trained), "--out",
             str(work / "sys-raft"))  # fmt: skip
        step("eval", "run", str(work / "sys-raft"), *limit)

    base_first = timed(manual)
    base_rerun = timed(manual)
    print(f"baseline: first {base_first:.1f} s, re-run {base_rerun:.1f} s", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({
        "machine": machine(), "questions": n, "ours_first_s": round(first, 1), "ours_rerun_s": round(rerun, 1),
        "baseline_first_s": round(base_first, 1), "baseline_rerun_s": round(base_rerun, 1),
        "ours_peak_rss_mb": round(PEAK_MB["ours"]), "baseline_peak_rss_mb": round(PEAK_MB["baseline"]),
        "ratio": round(first / base_first, 3), "rerun_ratio": round(rerun / first, 4),
        "rerun_ratio_vs_baseline": round(rerun / base_rerun, 4),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
