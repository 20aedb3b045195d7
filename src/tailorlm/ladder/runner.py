"""`tailor ladder`: run the applicable rungs on one Task, each against the same eval examples and metrics.

    task.yaml → preflight (every data problem, before any model loads) → plan (estimates per rung)
      → for each rung: cached? reuse : build the System, evaluate it, write rungs/<rung>/result.json (last)
      → paired comparisons → recommendation → best/system.yaml → report (HTML, markdown, Pareto chart)

A rung's ``result.json`` is written last and atomically, with the rung's content key: a killed ladder resumes
from the first rung without one, and a re-run with nothing changed reads every result back (docs/ladder.md).
A rung that fails is recorded with its error and the ladder goes on; a failed rung is retried on the next run.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from tailorlm.core.io import atomic_write_json, atomic_write_text
from tailorlm.core.system import System
from tailorlm.core.task import CanarySpec, Task
from tailorlm.ladder.cache import code_version, rung_key
from tailorlm.ladder.config import quick as quick_config
from tailorlm.ladder.context import LadderContext, TrainingDisplay, release_memory
from tailorlm.ladder.result import BuildCost, Estimate, Paired, Quality, RungResult, ServeCost
from tailorlm.ladder.rungs import RUNGS, Built, Rung, applicable

log = logging.getLogger(__name__)
BASELINE = "zero-shot"
RESULT_FILE = "result.json"


@dataclass
class LadderOutcome:
    dir: Path
    results: list[RungResult]
    recommendation: Any  # ladder.recommend.Recommendation
    report: Any  # eval.report.ReportFiles, or None for --plan
    plan: dict[str, Estimate]
    wall_s: float


class PeakMemory:
    """Peak resident memory of this process while the block runs, sampled every 0.2 s from /proc.

    ``ru_maxrss`` only ever grows over the process's life, so it cannot tell one rung's peak from an earlier
    rung's; sampling VmRSS can. Falls back to ``ru_maxrss`` where /proc is missing.
    """

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True, name="ladder-peak-memory")

    @staticmethod
    def current_mb() -> float:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self.current_mb())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self.peak_mb = self.current_mb()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        self.peak_mb = max(self.peak_mb, self.current_mb())


def default_dir(task: Task, quick: bool) -> Path:
    return Path("runs") / f"ladder-{task.name}{'-quick' if quick else ''}"


def disk_mb(paths: list[Path]) -> float:
    total = 0
    for p in paths:
        p = Path(p)
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return round(total / 2**20, 2)


def read_result(path: Path) -> RungResult | None:
    try:
        return RungResult.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None  # missing or torn: the rung runs again


def _quality(metrics: dict[str, Any], name: str) -> Quality | None:
    m = (metrics.get("metrics") or {}).get(name)
    if not isinstance(m, dict) or m.get("value") is None:
        return None
    return Quality(metric=name, value=m["value"], low=m.get("low"), high=m.get("high"), n=int(metrics.get("n") or 0))


def _scores(eval_run: str, metric: str) -> dict[str, float]:
    path = Path(eval_run) / "predictions.jsonl"
    out: dict[str, float] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            value = (row.get("scores") or {}).get(metric)
            if value is not None:
                out[str(row["id"])] = float(value)
    return out


def paired(result: RungResult, other: RungResult, metric: str, seed: int) -> Paired | None:
    """``result - other`` on the examples both scored (paired bootstrap)."""
    from tailorlm.eval.stats import paired_bootstrap

    if not (result.eval_run and other.eval_run):
        return None
    a, b = _scores(result.eval_run, metric), _scores(other.eval_run, metric)
    shared = [k for k in a if k in b]
    if len(shared) < 2:
        return None
    d = paired_bootstrap([a[k] for k in shared], [b[k] for k in shared], n_resamples=2000, seed=seed)
    return Paired(other=other.name, diff=d["diff"], low=d["low"], high=d["high"], p_value=d.get("p_value"))


class Ladder:
    """One ladder over one task: ``Ladder(task, …).run()``."""

    def __init__(
        self,
        task: Task,
        *,
        model: str = "default",
        out: Path | None = None,
        rungs: list[str] | None = None,
        quick: bool = False,
        budget_minutes: float | None = None,
        progress: bool = True,
        console: Console | None = None,
        training_display: TrainingDisplay | None = None,
    ) -> None:
        config = quick_config(task.ladder) if quick else task.ladder
        self.task = task.model_copy(update={"ladder": config})
        self.quick = quick
        self.budget_s = budget_minutes * 60 if budget_minutes else None
        self.console = console or Console(stderr=True)
        self.dir = Path(out) if out else default_dir(task, quick)
        self.rungs = applicable(self.task, rungs or config.rungs)
        self.requested = (rungs or config.rungs) is not None  # named by the user: one that cannot run is an error
        self.ctx = LadderContext(
            task=self.task, config=config, model=model, dir=self.dir, progress=progress,
            training_display=training_display,
        )  # fmt: skip

    # --- the steps ---------------------------------------------------------------------------------------------

    def runnable(self) -> list[Rung]:
        return [r for r, why in self.rungs if why is None]

    def preflight(self, *, plan_only: bool = False) -> Any:
        """Every data problem, before any model loads: file, line and field (ladder.preflight). Then each rung's
        data is built without a model (``check_rungs``): a rung the user named that cannot run stops the ladder
        here (a plan only lists it); one the ladder chose by default is skipped with its reason and fix."""
        from tailorlm.ladder.preflight import cannot_run, check_rungs, preflight, task_file_of

        needs: set[str] = set()
        for rung in self.runnable():
            needs |= set(rung.uses)
        report = preflight(self.task, needs)
        report.rungs = check_rungs(self.task, [r.name for r in self.runnable()], ctx=self.ctx)
        blocked = {c.name: c for c in report.rungs if not c.runs}
        if blocked and self.requested and not plan_only:
            raise cannot_run(list(blocked.values()), str(task_file_of(self.task)))
        for c in blocked.values():
            fix = f" [dim](fix: {escape(c.fix)})[/]" if c.fix else ""
            self.console.print(f"[yellow]{c.title}: won't run, {escape(str(c.reason))}[/]{fix}", highlight=False)
        self.rungs = [
            (r, f"won't run: {blocked[r.name].reason}" if r.name in blocked else why) for r, why in self.rungs
        ]
        return report

    def key(self, rung: Rung) -> str:
        return rung_key(self.task, rung.name, self.ctx.model, rung.config_keys, set(rung.uses))

    def plan(self) -> dict[str, Estimate]:
        from tailorlm.ladder.plan import make_plan

        self.dir.mkdir(parents=True, exist_ok=True)
        return make_plan(self.ctx, self.runnable(), console=self.console)

    def run(self, *, plan_only: bool = False) -> LadderOutcome:
        start = time.perf_counter()
        self.preflight(plan_only=plan_only)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_state("running", [])
        plan = self.plan()
        if plan_only:
            return LadderOutcome(self.dir, [], None, None, plan, time.perf_counter() - start)

        results: list[RungResult] = []
        todo = self.runnable()
        for i, (rung, why) in enumerate(self.rungs, 1):
            if why is not None:
                results.append(RungResult(name=rung.name, title=rung.title, family=rung.family, status="skipped",
                                          reason=why))  # fmt: skip
                continue
            remaining = sum(plan[r.name].total_s for r in todo[todo.index(rung) :] if r.name in plan)
            results.append(self._climb(rung, i, plan.get(rung.name), remaining, start))
            self._write_state("running", results)
        self.ctx.release_engine()
        return self._finish(results, plan, start)

    # --- one rung ----------------------------------------------------------------------------------------------

    def _climb(self, rung: Rung, i: int, estimate: Estimate | None, remaining_s: float, start: float) -> RungResult:
        rung_dir = self.dir / "rungs" / rung.name
        key = self.key(rung)
        previous = read_result(rung_dir / RESULT_FILE)
        if previous is not None and previous.key == key and previous.status == "complete":
            self.console.print(f"[dim]rung {i}/{len(self.rungs)} · {rung.title}: unchanged, reused[/]")
            return previous.model_copy(update={"cached": True})
        elapsed = time.perf_counter() - start
        if self.budget_s is not None and estimate is not None and elapsed + estimate.total_s > self.budget_s:
            why = (f"over budget: estimated {_clock(estimate.total_s)} with {_clock(self.budget_s - elapsed)} of "
                   f"--budget-minutes left")  # fmt: skip
            self.console.print(f"[yellow]rung {i}/{len(self.rungs)} · {rung.title}: skipped, {why}[/]")
            return RungResult(name=rung.name, title=rung.title, family=rung.family, status="skipped", reason=why)
        eta = f" · ladder ETA {_clock(remaining_s)}" if remaining_s else ""
        guess = f" · estimate {_clock(estimate.total_s)}" if estimate else ""
        self.console.rule(f"[bold]rung {i}/{len(self.rungs)} · {rung.title}[/]{guess}{eta}")
        if rung_dir.is_dir() and previous is not None and previous.key != key:
            _clear_runs(rung_dir)  # a changed rung starts clean
        rung_dir.mkdir(parents=True, exist_ok=True)
        (rung_dir / "error.log").unlink(missing_ok=True)  # an earlier failure's traceback is not this attempt's
        release_memory()
        t0 = time.perf_counter()
        shared_before = self.ctx.shared_spent_s
        try:
            with PeakMemory() as memory:
                built = rung.build(self.ctx, rung_dir)
                # Shared work counts in full in every rung that uses it, not in whichever rung triggered it.
                build_s = time.perf_counter() - t0 - (self.ctx.shared_spent_s - shared_before) + built.shared_s
                result = self._evaluate(rung, built, rung_dir, key)
            result.build.wall_s = round(build_s, 2)  # type: ignore[union-attr]
            result.build.peak_rss_mb = round(memory.peak_mb, 1)  # type: ignore[union-attr]
        except Exception as err:
            atomic_write_text(rung_dir / "error.log", traceback.format_exc())
            message = f"{type(err).__name__}: {err}"
            self.console.print(f"[bold red]rung {rung.title} failed[/]: {message} (traceback: {rung_dir}/error.log)")
            log.warning("rung %s failed: %s", rung.name, message)
            result = RungResult(name=rung.name, title=rung.title, family=rung.family, status="failed", key=key,
                                error=message)  # fmt: skip
        result.estimate = estimate
        result.actual_s = round(time.perf_counter() - t0, 2)
        atomic_write_json(rung_dir / RESULT_FILE, result.model_dump(mode="json"))
        if result.ok:
            q = result.quality
            assert q is not None
            ci = f"[{_f(q.low)}, {_f(q.high)}]"
            self.console.print(f"[green]{rung.title}[/]: {q.metric} {q.value:.3f} {ci} in {_clock(result.actual_s)}")
        return result

    def _evaluate(self, rung: Rung, built: Built, rung_dir: Path, key: str) -> RungResult:
        from tailorlm.eval.canary_check import check_canaries
        from tailorlm.eval.runner import EvalConfig, evaluate
        from tailorlm.models.default import cache_root

        system = self.ctx.with_engine(built.system.model_copy(update={"name": rung.name}))
        system.save(rung_dir / "system")
        task = rung.eval_task(self.task)
        config = EvalConfig(task=task.name, system=system.name, limit=self.ctx.config.eval_limit,
                            batch_size=self.ctx.config.batch_size)  # fmt: skip
        engine = self.ctx.engine_for(system)
        res = evaluate(system, task, config=config, root=rung_dir / "runs", engine=engine, progress=self.ctx.progress,
                       name=f"ladder-{rung.name}")  # fmt: skip
        metrics = res.metrics
        canaries = built.canaries
        if canaries is None and not rung.trains:
            # Prompt and RAG rungs run the base weights: their canaries are the base model's (cached by weights).
            spec = CanarySpec(enabled=True, limit=self.ctx.config.canary_limit, max_drop=self.task.canaries.max_drop)
            canaries = check_canaries(spec, system, lambda: engine, cache_root())
        cost = metrics.get("cost") or {}
        return RungResult(
            name=rung.name, title=rung.title, family=rung.family, status="complete", key=key,
            system=str(rung_dir / "system" / "system.yaml"), eval_run=str(res.run.path), build_runs=built.runs,
            quality=_quality(metrics, self.task.primary),
            metrics={m: q for m in self.task.metrics if (q := _quality(metrics, m)) is not None},
            build=BuildCost(tokens=built.tokens, disk_mb=disk_mb([*built.artifacts, rung_dir / "system"]),
                            detail={k: round(v, 2) for k, v in built.detail.items()}),
            serve=ServeCost(latency_p50_s=cost.get("latency_p50_s"), tokens_per_s=cost.get("tokens_per_s"),
                            prompt_tokens_per_query=cost.get("prompt_tokens_per_example"),
                            eval_wall_s=cost.get("wall_s"), engine=(metrics.get("engine") or {}).get("engine")),
            canaries=canaries, notes=built.notes,
        )  # fmt: skip

    # --- the end -----------------------------------------------------------------------------------------------

    def _finish(self, results: list[RungResult], plan: dict[str, Estimate], start: float) -> LadderOutcome:
        from tailorlm.ladder.recommend import recommend
        from tailorlm.ladder.report import write_ladder_report

        metric = self.task.primary
        base = next((r for r in results if r.name == BASELINE and r.ok), None)
        for r in results:
            if r.ok and base is not None and r is not base:
                r.vs_baseline = paired(r, base, metric, self.task.seed)
        # Each rung names the rung it must beat; registered rungs (head, later preference or distillation rungs)
        # bring their own.
        below = {name: rung.below for name, rung in RUNGS.items() if rung.below}
        rec = recommend(results, primary=metric, budgets=self.task.budgets, baseline=BASELINE, seed=self.task.seed,
                        below=below)  # fmt: skip
        chosen = next((r for r in results if r.name == getattr(rec, "chosen", None)), None)
        best_dir = self.dir / "best"
        if chosen is not None and chosen.system:
            System.load(chosen.system).model_copy(update={"name": f"{self.task.name}-{chosen.name}"}).save(best_dir)
        probes = self._probes(chosen)
        title = f"Ladder: {self.task.name}" + (" (--quick: a smoke run, figures are noise)" if self.quick else "")
        files = write_ladder_report(results, rec, self.dir / "report", task_name=self.task.name, primary=metric,
                                    title=title, probes=probes)  # fmt: skip
        wall = time.perf_counter() - start
        self._write_state("complete", results, rec, wall)
        return LadderOutcome(self.dir, results, rec, files, plan, wall)

    def _probes(self, chosen: RungResult | None) -> Any:
        """Bias and safety probes on the recommended System (``ladder.probes``): the report says what ran, and why
        a probe did not. A failure is reported, never fatal: the ladder's results stand without it."""
        cfg = self.ctx.config.probes
        if not cfg.enabled or chosen is None or not chosen.system:
            return None
        from tailorlm.eval.probes.report import ProbesReport, probes_markdown, run_probes

        system = System.load(chosen.system)
        # The same System, task and settings as last time: the report is read back, and no model is loaded.
        key = f"{chosen.key}|{cfg.model_dump_json()}|{Path(chosen.system).read_text(encoding='utf-8')}"
        saved, saved_key = self.dir / "probes" / "probes.json", self.dir / "probes" / "key.txt"
        if saved.is_file() and saved_key.is_file() and saved_key.read_text(encoding="utf-8") == key:
            return ProbesReport.model_validate_json(saved.read_text(encoding="utf-8"))
        self.console.rule(f"[bold]bias and safety probes · {chosen.title}[/]")
        try:
            report = run_probes(
                system, self.task, limit=cfg.limit, max_new_tokens=cfg.max_new_tokens, root=self.dir / "probes",
                engine=self.ctx.engine_for(system), progress=self.ctx.progress, batch_size=self.ctx.config.batch_size,
            )  # fmt: skip
        except Exception as err:  # the probes are an addition to a finished ladder: never fatal
            log.warning("probes failed: %s", err)
            (self.dir / "probes").mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.dir / "probes" / "error.log", traceback.format_exc())
            return f"the probes failed: {type(err).__name__}: {err}"
        atomic_write_json(saved, report.model_dump(mode="json"))
        atomic_write_text(self.dir / "probes" / "probes.md", probes_markdown(report))
        atomic_write_text(saved_key, key)  # last: a key without its report is never read back
        return report

    def _write_state(self, status: str, results: list[RungResult], rec: Any = None, wall: float | None = None) -> None:
        atomic_write_json(
            self.dir / "ladder.json",
            {
                "status": status,
                "task": self.task.name,
                "task_dir": self.task.base_dir,
                "model": self.ctx.model,
                "quick": self.quick,
                "code_version": code_version(),
                "config": self.task.ladder.model_dump(mode="json"),
                "rungs": [r.model_dump(mode="json") for r in results],
                "recommendation": rec.model_dump(mode="json") if rec is not None else None,
                "wall_s": wall,
            },
        )


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    m, s = divmod(round(seconds), 60)
    return f"{m}:{s:02d}"


def _f(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _clear_runs(rung_dir: Path) -> None:
    """Remove a changed rung's earlier runs, except the training its pointer names: the plan may have started it
    for the rung as it is now (``LadderContext.train`` checks the pointer's fingerprint and drops a stale one)."""
    from tailorlm.ladder.context import TRAINING_POINTER

    keep = None
    if (pointer := rung_dir / TRAINING_POINTER).is_file():
        keep = Path(json.loads(pointer.read_text())["run"]).name
    for child in (rung_dir / "runs").glob("*"):
        if child.name == keep:
            continue
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
