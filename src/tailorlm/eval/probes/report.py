"""Run the bias and safety probes on one System and say, in plain words, what ran and what it cannot show.

    run_probes(system, task)            -> ProbesReport (JSON-serialisable: report.model_dump(mode="json"))
    probes_markdown(report)             -> a Markdown section for a ladder or model-card report

A probe that could not run (no task for the fairness probe, a classification-head System for the harmlessness probe)
is listed under ``skipped`` with the reason, never silently left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tailorlm.core.system import System
from tailorlm.core.task import Task
from tailorlm.errors import ConfigError
from tailorlm.eval.probes.fairness import LIMITS as FAIRNESS_LIMITS
from tailorlm.eval.probes.fairness import FairnessReport, probe_fairness
from tailorlm.eval.probes.harmlessness import LIMITS as HARMLESSNESS_LIMITS
from tailorlm.eval.probes.harmlessness import HarmlessnessReport, probe_harmlessness
from tailorlm.eval.probes.rates import Rate

PROBES = ("fairness", "harmlessness")

# What each probe cannot show, whatever its numbers: printed with every report that ran it.
LIMITS: dict[str, list[str]] = {"fairness": FAIRNESS_LIMITS, "harmlessness": HARMLESSNESS_LIMITS}


class ProbesReport(BaseModel):
    """What ran, what did not and why, each probe's numbers, and what the probes that ran cannot show."""

    system: str
    task: str | None
    ran: list[str]
    skipped: dict[str, str]  # probe → why it did not run
    fairness: FairnessReport | None = None
    harmlessness: HarmlessnessReport | None = None
    limits: list[str]


def run_probes(
    system: System,
    task: Task | None = None,
    *,
    probes: Sequence[str] = PROBES,
    limit: int | None = None,
    prompts: str | Path | None = None,
    reward_model: str | None = None,
    judge: str | None = None,
    swap_files: Sequence[str | Path] | None = None,
    root: str | Path = "runs",
    cache_dir: str | Path | None = None,
    engine: Any = None,
    progress: bool = True,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "auto",
    use_cache: bool = True,
    max_new_tokens: int | None = None,
) -> ProbesReport:
    """Run ``probes`` on ``system``: ``fairness`` on ``task``'s eval set, ``harmlessness`` on red-team prompts.

    ``limit`` caps each probe (probed records for fairness, prompts for harmlessness). ``engine`` is shared by both
    probes when given (the ladder passes the one it already loaded).
    """
    unknown = [p for p in probes if p not in PROBES]
    if unknown:
        raise ConfigError(f"unknown probe(s) {unknown}", hint=f"choose from: {', '.join(PROBES)}")
    report = ProbesReport(system=system.name, task=task.name if task else None, ran=[], skipped={}, limits=[])
    common: dict[str, Any] = {
        "root": root,
        "cache_dir": cache_dir,
        "engine": engine,
        "progress": progress,
        "batch_size": batch_size,
        "device": device,
        "dtype": dtype,
        "use_cache": use_cache,
    }
    if "fairness" in probes:
        if task is None:
            report.skipped["fairness"] = "no task given: the fairness probe swaps terms in a task's eval inputs"
        else:
            report.fairness = probe_fairness(system, task, limit=limit, swap_files=swap_files, **common)
            report.ran.append("fairness")
    if "harmlessness" in probes:
        if system.head is not None:
            report.skipped["harmlessness"] = "the System answers with a classification head's labels: it cannot refuse"
        else:
            kw = {"confidence": task.bootstrap.confidence, "resamples": task.bootstrap.resamples} if task else {}
            if max_new_tokens is not None:
                kw["max_new_tokens"] = max_new_tokens
            report.harmlessness = probe_harmlessness(
                system, prompts=prompts, limit=limit, reward_model=reward_model, judge=judge, **kw, **common
            )
            report.ran.append("harmlessness")
    for sub in (report.fairness, report.harmlessness):
        if sub is not None:
            report.limits.extend(sub.limits)
    return report


# --- Markdown ----------------------------------------------------------------------------------------------------


def pct(r: Rate) -> str:
    """``12.5% [5.1, 27.0]`` for a rate and its CI, in percent."""
    return f"{100 * r.value:.1f}% [{100 * r.low:.1f}, {100 * r.high:.1f}]"


def _gap(f: Any) -> str:
    gap = f.gap
    if gap is None:
        return "—"
    ci = "" if gap.low is None else f" [{gap.low:+.3f}, {gap.high:+.3f}]"
    return f"{gap.high_group} − {gap.low_group}: {gap.diff:+.3f}{ci}"


def fairness_markdown(f: FairnessReport) -> list[str]:
    out = [
        "### Counterfactual fairness",
        "",
        f"Task `{f.task}`: {f.n_probed} of {f.n_scanned} eval records hold a swappable term and were probed; "
        f"{f.n_not_probed} were not probed. Primary metric: {f.primary_metric}.",
        "",
    ]
    if f.change_rate is None:
        return [*out, "Nothing was probed.", ""]
    out += [
        f"Answer changed under some swap: **{pct(f.change_rate)}** ({f.change_rate.k} of {f.change_rate.n} records).",
        "",
        f"| axis | records | answer changed [95% CI] | {f.primary_metric} by group | gap [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for a in f.axes:
        groups = ", ".join(f"{g} {m.value:.3f}" for g, m in a.by_group.items())
        out.append(f"| {a.axis} | {a.n_probed} | {pct(a.change_rate)} | {groups} | {_gap(a)} |")
    changed = [(a.axis, c) for a in f.axes for c in a.changed][:5]
    if changed:
        out += ["", "Changed answers (first few):", ""]
        for axis, c in changed:
            before, after = c.answer.strip()[:60], c.counterfactual_answer.strip()[:60]
            out.append(f"- {axis} → {c.group}, `{c.id}`: {before!r} became {after!r}")
    return [*out, ""]


def harmlessness_markdown(h: HarmlessnessReport) -> list[str]:
    out = [
        "### Harmlessness",
        "",
        f"{h.n} red-team prompts (`{h.prompts}`), answers of at most {h.max_new_tokens} tokens.",
        "",
        f"Refusal rate: **{pct(h.refusal_rate)}** ({h.refusal_rate.k} of {h.refusal_rate.n}).",
    ]
    for s in (h.reward, h.judge):
        if s is not None and s.mean is not None:
            out.append(f"Mean score, {s.scorer}: {s.mean:.3f} [{s.low:.3f}, {s.high:.3f}] over {s.n} answers.")
    out += ["", "| category | prompts | refused [95% CI] |", "|---|---|---|"]
    for cat, r in h.by_category.items():
        out.append(f"| {cat} | {r.n} | {pct(r)} |")
    return [*out, ""]


def probes_markdown(report: ProbesReport) -> str:
    """The report as a Markdown section: what ran, the numbers, and what the checks cannot show."""
    ran = ", ".join(report.ran) or "none"
    out = [f"## Bias and safety probes: {report.system}", "", f"Ran: {ran}."]
    for probe, why in report.skipped.items():
        out.append(f"Not run: {probe} ({why}).")
    out.append("")
    if report.fairness is not None:
        out += fairness_markdown(report.fairness)
    if report.harmlessness is not None:
        out += harmlessness_markdown(report.harmlessness)
    if report.limits:
        out += ["### What these checks cannot show", ""] + [f"- {line}" for line in report.limits] + [""]
    return "\n".join(out)
