"""A/B experiments: the config, which arm a client gets, the report that says which arm users prefer, promote.

An experiment is a model name that clients ask for; the server answers it with one of several Systems (arms),
picked by weight and kept stable per user or per API key, so a user does not flip between answer styles and their
feedback is attributable. Shadow Systems answer the same requests unseen, to measure a candidate's latency and
errors (and, in a compare view, its answers) without exposing users to it.

The report reads only the store: every response carries its experiment and arm. Its unit is the response: a
response's latest thumbs (or score) counts once, however often it was re-rated, and a pair of responses' latest
pairwise choice counts once.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import Field, ValidationError, model_validator

from tailorlm.core.config import StrictModel, parse_yaml
from tailorlm.errors import ConfigError, TailorError
from tailorlm.serve.ab_report import ABReport, build_report, render_report
from tailorlm.serve.store import FeedbackStore

# 30 rated responses per arm before the report may decide. Below that a Wilson interval on an up-rate is wider
# than ±0.17, so only a huge difference could be significant, and every early look at a small sample is one more
# chance of stopping on a fluke (the "peeking" problem). 30 is the usual floor for the normal approximations that
# the intervals lean on; set it higher when the arms are expected to be close.
MIN_SAMPLES = 30


class Arm(StrictModel):
    """One side of an experiment."""

    system: str = Field(min_length=1, description="The System (System.name) that answers this arm's traffic.")
    weight: float = Field(1.0, gt=0, description="Share of traffic, relative to the other arms' weights.")


class Experiment(StrictModel):
    """An experiment in serve.yaml's ``experiments:`` list."""

    name: str = Field(min_length=1, description="The model name clients ask for.")
    arms: dict[str, Arm] = Field(description="Arm name → Arm; at least two.")
    shadow: list[str] = Field(default_factory=list, description="Systems that also answer, unseen by the client.")
    sticky: Literal["user", "key"] = Field("user", description="What keeps a client on one arm: user field or key.")
    min_samples: int = Field(MIN_SAMPLES, ge=1, description="Per arm, before the report may decide.")

    @model_validator(mode="after")
    def _check(self) -> Experiment:
        if len(self.arms) < 2:
            raise ValueError(f"experiment {self.name!r} needs at least two arms, got {len(self.arms)}")
        arm_systems = {a.system for a in self.arms.values()}
        if clash := sorted(set(self.shadow) & arm_systems):
            raise ValueError(f"shadow System(s) {', '.join(clash)} already answer an arm of {self.name!r}")
        if len(set(self.shadow)) != len(self.shadow):
            raise ValueError(f"experiment {self.name!r} lists a shadow System twice")
        return self

    def arm_of(self, system: str) -> str | None:
        """The (first, by name) arm that ``system`` answers, or None."""
        return next((name for name, arm in sorted(self.arms.items()) if arm.system == system), None)


def assign_arm(experiment: Experiment, sticky_id: str | None, *, rng: random.Random | None = None) -> str:
    """The arm for a client: ``sha256(experiment name, sticky id)`` mapped onto the cumulative weights.

    Deterministic, so a client keeps its arm across requests, server restarts and replicas with no shared state;
    salted with the experiment name, so one user's arms in two experiments are independent. Arms are taken in
    name order, not file order, so reordering serve.yaml moves nobody. ``sticky_id=None`` (an anonymous client)
    gets a random arm by weight.
    """
    arms = sorted(experiment.arms.items())
    if sticky_id is None:
        u = (rng or random).random()
    else:
        digest = hashlib.sha256(f"{experiment.name}\0{sticky_id}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    total = sum(a.weight for _, a in arms)
    cumulative = 0.0
    for name, arm in arms:
        cumulative += arm.weight / total
        if u < cumulative:
            return name
    return arms[-1][0]  # u within float rounding of 1.0


class Route(NamedTuple):
    """Where one request of an experiment goes: the arm (None once promoted), its System, and shadow Systems."""

    arm: str | None
    system: str
    shadow: list[str]


def route(
    experiment: Experiment, sticky_id: str | None, *, promoted: str | None = None, rng: random.Random | None = None
) -> Route:
    """The arm and System answering a request, and the shadow Systems to send it to as well.

    ``promoted`` is ``store.promoted(experiment.name)``, read per request (not cached: another replica or
    ``tailor ab promote`` may change it). A promoted experiment sends everything to that System, with no shadow;
    the arm is the promoted System's arm, so its responses still count for that arm.
    """
    if promoted is not None:
        return Route(experiment.arm_of(promoted), promoted, [])
    arm = assign_arm(experiment, sticky_id, rng=rng)
    return Route(arm, experiment.arms[arm].system, list(experiment.shadow))


def load_experiments(path: str | Path) -> list[Experiment]:
    """The ``experiments:`` list of a serve.yaml (its other keys belong to the server and are not read here)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found", hint="check the path, relative to the current directory")
    data = parse_yaml(path.read_text(encoding="utf-8"), source=str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    raw = data.get("experiments") or []
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: experiments: expected a list of experiments, got {type(raw).__name__}")
    experiments = []
    for i, item in enumerate(raw):
        try:
            experiments.append(Experiment.model_validate(item))
        except ValidationError as err:
            lines = [f"{path}: experiments[{i}]{''.join(f'.{p}' for p in e['loc'])}: {e['msg']}" for e in err.errors()]
            raise ConfigError("\n".join(lines)) from None
    names = [e.name for e in experiments]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(f"{path}: experiment name(s) listed twice: {', '.join(dupes)}")
    return experiments


def find_experiment(experiments: list[Experiment], name: str, source: str) -> Experiment:
    for e in experiments:
        if e.name == name:
            return e
    known = ", ".join(e.name for e in experiments) or "none"
    raise ConfigError(f"{source} has no experiment {name!r}", hint=f"experiments there: {known}")


def ab_report(
    store: FeedbackStore,
    experiment: str | Experiment,
    *,
    since: float | None = None,
    until: float | None = None,
    alpha: float = 0.05,
    min_samples: int | None = None,
) -> ABReport:
    """Per-arm statistics and the verdict of ``experiment`` over responses created in ``[since, until)``.

    Given an ``Experiment``, its configured arms appear even before they have traffic, and its ``min_samples``
    applies (``min_samples=`` overrides either). See ``ab_report.build_report`` for the statistics.
    """
    name = experiment.name if isinstance(experiment, Experiment) else experiment
    configured = sorted(experiment.arms) if isinstance(experiment, Experiment) else []
    if min_samples is None:
        min_samples = experiment.min_samples if isinstance(experiment, Experiment) else MIN_SAMPLES
    responses = {r.id: r for r in store.responses(since=since, until=until, experiment=name)}
    feedback = [f for f in store.feedback(experiment=name) if f.response_id in responses]
    # A pairwise choice may compare with a response outside the period or the experiment: look those up once.
    others = {f.compare_to for f in feedback if f.compare_to and f.compare_to not in responses}
    for rid in sorted(others):
        if (r := store.get_response(rid)) is not None:
            responses[rid] = r
    report = build_report(name, list(responses.values()), feedback, configured, alpha=alpha, min_samples=min_samples)
    return report.model_copy(update={"since": since, "until": until, "promoted": store.promoted(name)})


def _systems_by_arm(store: FeedbackStore, experiment: str) -> dict[str, str]:
    """Arm → the System that answered most of its stored responses (for promote without serve.yaml)."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in store.responses(experiment=experiment):
        if r.arm is not None and not r.shadow:
            counts[r.arm][r.system] += 1
    return {arm: max(systems, key=lambda s: (systems[s], s)) for arm, systems in counts.items()}


def promote(store: FeedbackStore, experiment: Experiment | str, arm: str | None = None) -> str:
    """Route all of ``experiment``'s traffic to one arm's System from now on; returns that System's name.

    ``arm=None`` takes the report's winner and refuses while the report cannot decide: promoting on noise would
    throw away the experiment. Naming an arm overrides that (an operator's call). The System comes from the
    ``Experiment`` config, or, given only a name, from the arm's stored responses.
    """
    name = experiment.name if isinstance(experiment, Experiment) else experiment
    if arm is None:
        report = ab_report(store, experiment)
        if not report.decided or report.winner is None:
            raise TailorError(
                f"cannot promote {name!r}: {report.reason}",
                hint="collect more feedback and run `tailor ab report` again, or name the arm: --arm NAME",
            )
        arm = report.winner
    if isinstance(experiment, Experiment):
        if arm not in experiment.arms:
            raise ConfigError(f"experiment {name!r} has no arm {arm!r}", hint=f"arms: {', '.join(experiment.arms)}")
        system = experiment.arms[arm].system
    else:
        stored = _systems_by_arm(store, name)
        if arm not in stored:
            raise TailorError(
                f"no stored response of experiment {name!r} came from arm {arm!r}, so its System is unknown",
                hint="pass --config serve.yaml so the arm's System comes from the experiment's config",
            )
        system = stored[arm]
    store.promote(name, arm, system)
    return system


def as_json(report: ABReport) -> dict[str, Any]:
    """The report as plain JSON types (for ``--json`` and the server's A/B endpoint)."""
    return report.model_dump(mode="json")


__all__ = [
    "MIN_SAMPLES",
    "ABReport",
    "Arm",
    "Experiment",
    "Route",
    "ab_report",
    "as_json",
    "assign_arm",
    "find_experiment",
    "load_experiments",
    "promote",
    "render_report",
    "route",
]
