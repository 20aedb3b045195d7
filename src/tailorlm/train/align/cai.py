"""Constitutional AI, the supervised stage: answer, critique against a principle, revise; keep every step.

Bai et al. 2022, "Constitutional AI: Harmlessness from AI Feedback", §3.1. For each (red-team) prompt:

1. the student answers it;
2. a critic critiques the answer against one principle of the constitution, drawn at random (seeded per prompt);
3. a reviser rewrites the answer in the light of the critique; with ``rounds > 1`` the revision is critiqued and
   revised again under a freshly drawn principle, as in the paper's repeated revisions.

The revisions become SFT records (prompt → revised answer) and preference pairs (revised ≻ original), which
``tailor train sft`` and ``tailor train dpo`` train on. Critic and reviser are the student's own System unless
others are given, e.g. a stronger model behind an OpenAI-compatible endpoint teaching a small local student.

Everything lands in the run's ``artifacts/``:

    constitution.yaml   the constitution used (examples resolved), so the run can be read and resumed as it was
    prompts.jsonl       the prompts used, with their ids
    steps.jsonl         one line per prompt: answer, then per round principle, critique, revision; appended and
                        fsynced per batch, so a killed run resumes with the prompts not yet done
    sft.jsonl           OpenAI chat records          (written atomically at the end)
    preference.jsonl    {prompt, chosen, rejected}   (written atomically at the end)
    summary.json        counts, written last: its presence means the outputs are complete
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from tailorlm.core.config import StrictModel
from tailorlm.core.io import append_text, atomic_write_json, atomic_write_text, atomic_write_yaml, sha256_file
from tailorlm.core.run import Run
from tailorlm.core.system import SYSTEM_FILE, System
from tailorlm.errors import ConfigError, DataError
from tailorlm.models.engines.base import Engine, GenerationParams
from tailorlm.prompting.program import render_messages
from tailorlm.train.align.constitution import (
    Constitution,
    clean_critique,
    clean_revision,
    critique_messages,
    load_constitution,
    revision_messages,
    sample_principle,
)

_LOG = logging.getLogger(__name__)

RED_TEAM_PROMPTS = Path(__file__).parents[2] / "eval" / "data" / "red_team.jsonl"
CONSTITUTION_FILE = "constitution.yaml"
PROMPTS_FILE = "prompts.jsonl"
STEPS_FILE = "steps.jsonl"
SFT_FILE = "sft.jsonl"
PREFERENCE_FILE = "preference.jsonl"
SUMMARY_FILE = "summary.json"

Outcome = Literal["pair", "empty_answer", "empty_revision", "unchanged"]
# (generations done, generations planned, what is running now): for a progress bar.
ProgressFn = Callable[[int, int, str], None]


class CaiConfig(StrictModel):
    """``tailor cai``: what answers, what critiques and revises, against which principles, on which prompts."""

    name: str = Field("cai", description="Run name.")
    system: str = Field(description="The student: a system.yaml, a folder holding one, or a model spec.")
    critic: str | None = Field(None, description="Writes the critiques; None = the student.")
    reviser: str | None = Field(None, description="Writes the revisions; None = the critic.")
    constitution: str | None = Field(None, description="Constitution YAML; None = the packaged default.")
    prompts: str | None = Field(None, description="JSONL with a `prompt` key, or .txt one per line; None = red team.")
    limit: int | None = Field(None, ge=1, description="Use the first N prompts.")
    rounds: int = Field(1, ge=1, le=8, description="Critique/revision rounds per prompt (the paper used up to 4).")
    seed: int = Field(0, description="Seeds the principle drawn for each prompt and round.")
    batch_size: int = Field(8, ge=1, description="Prompts per generate call per stage, and per fsynced append.")
    max_new_tokens: int | None = Field(None, ge=1, description="Cap on every generation; None = each System's.")
    reward_model: str | None = Field(
        None, description="A `tailor train reward` model: the summary adds its score of the answers and revisions."
    )


@dataclass(frozen=True)
class CaiPrompt:
    """One prompt of the run. ``key`` (a hash of the text) seeds its principles, so a prompt draws the same
    principle wherever it sits in the file and whatever ``--limit`` is."""

    id: str
    prompt: str
    category: str | None = None

    @property
    def key(self) -> str:
        return hashlib.sha256(self.prompt.encode("utf-8")).hexdigest()[:16]


@dataclass
class Role:
    """A System at work in the pipeline: its engine and the decoding settings it generates with."""

    system: System
    engine: Engine
    params: GenerationParams


@dataclass
class Roles:
    student: Role
    critic: Role
    reviser: Role


# --- inputs ---------------------------------------------------------------------------------------------------


def resolve_system(spec: str) -> System:
    """A System from a system.yaml, a folder holding one, or a bare model spec (``default``, a HF folder, a hub id)."""
    path = Path(spec)
    if (path.is_file() and path.suffix in (".yaml", ".yml")) or (path / SYSTEM_FILE).is_file():
        return System.load(path)
    return System(name=path.name or spec, model=spec)


def load_prompts(path: str | Path | None = None, limit: int | None = None) -> list[CaiPrompt]:
    """Prompts from JSONL (a ``prompt`` key per line; ``category`` kept if present) or text (one per line).

    ``None`` reads the package's red-team prompts. Blank lines are skipped; a bad line is a ``DataError`` naming
    file:line.
    """
    source = Path(path) if path is not None else RED_TEAM_PROMPTS
    if not source.is_file():
        hint = "pass --prompts FILE (JSONL with a `prompt` key, or .txt with one prompt per line)"
        raise DataError(f"{source}: prompts file not found", hint=hint)
    if source.suffix == ".json":
        raise DataError(f"{source}: write the prompts as JSON Lines (.jsonl, one object per line) or as .txt")
    items: list[CaiPrompt] = []
    lines = source.read_text(encoding="utf-8", errors="replace").splitlines()
    as_json = source.suffix in (".jsonl", ".ndjson")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        category = None
        if as_json:
            try:
                row = json.loads(line)
            except ValueError as err:
                raise DataError(f"{source}:{number}: not valid JSON ({err.msg})") from None
            text = row.get("prompt") if isinstance(row, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{source}:{number}: prompt: expected a non-empty string under the `prompt` key")
            category = row.get("category") if isinstance(row.get("category"), str) else None
        else:
            text = line
        items.append(CaiPrompt(id=f"p{len(items):05d}", prompt=text.strip(), category=category))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise DataError(f"{source}: no prompts in the file")
    return items


def preflight(cfg: CaiConfig) -> None:
    """Read the constitution, the prompts and the Systems before a run directory exists: a typo fails in a second,
    not after a run folder (and maybe a model load) was made for nothing."""
    load_constitution(cfg.constitution)
    load_prompts(cfg.prompts, cfg.limit)
    for role, spec in _role_specs(cfg).items():
        _role_system(role, spec)
    if cfg.reward_model:
        from tailorlm.train.align.scorer import check_reward_model

        check_reward_model(cfg.reward_model)


def _role_specs(cfg: CaiConfig) -> dict[str, str]:
    critic = cfg.critic or cfg.system
    return {"student": cfg.system, "critic": critic, "reviser": cfg.reviser or critic}


def _role_system(role: str, spec: str) -> System:
    system = resolve_system(spec)
    if system.head is not None:
        flag = "--system" if role == "student" else f"--{role}"
        raise ConfigError(f"{flag} {spec}: a System with a head answers with labels; CAI needs one that writes")
    return system


def _engine_key(system: System) -> str:
    # What decides the weights an engine holds; Systems that differ only in prompt or decoding share an engine.
    parts = [system.model, [a.model_dump(mode="json") for a in system.adapters], system.engine]
    return json.dumps([*parts, system.engine_options.model_dump(mode="json")], sort_keys=True)


def build_roles(cfg: CaiConfig) -> Roles:
    """Load the student, critic and reviser, sharing one engine between roles that run the same weights."""
    from tailorlm.models.build import build_engine

    engines: dict[str, Engine] = {}
    roles: dict[str, Role] = {}
    for role, spec in _role_specs(cfg).items():
        system = _role_system(role, spec)
        if role == "student" and (system.retriever is not None or system.agent is not None):
            _LOG.warning("cai: the student's retriever and agent are not used; it answers from its prompt program")
        key = _engine_key(system)
        if key not in engines:
            engines[key] = build_engine(system, batch_size=cfg.batch_size)
        params = system.generation
        if cfg.max_new_tokens is not None:
            params = params.model_copy(update={"max_new_tokens": cfg.max_new_tokens})
        roles[role] = Role(system, engines[key], params)
    return Roles(**roles)


# --- the pipeline -----------------------------------------------------------------------------------------------


@dataclass
class StageProgress:
    """Counts generations across stages and reports them to a progress callback."""

    total: int
    report: ProgressFn | None = None
    done: int = 0
    stage: str = ""

    def start(self, stage: str) -> Callable[[int], None]:
        self.stage = stage
        self.tick(0)
        return self.tick

    def tick(self, n: int) -> None:
        self.done += n
        if self.report is not None:
            self.report(self.done, self.total, self.stage)


def _texts(role: Role, requests: Sequence[Any], counter: StageProgress, stage: str) -> list[str]:
    completions = role.engine.generate(requests, role.params, on_progress=counter.start(stage))
    return [c.text for c in completions]


def process_batch(
    batch: Sequence[CaiPrompt],
    roles: Roles,
    constitution: Constitution,
    *,
    rounds: int = 1,
    seed: int = 0,
    counter: StageProgress | None = None,
) -> list[dict[str, Any]]:
    """Answer, critique and revise one batch: one ``generate`` call per stage, for the whole batch."""
    counter = counter or StageProgress(total=len(batch) * (1 + 2 * rounds))
    examples = constitution.examples or []
    prompts = [item.prompt for item in batch]
    raw = _texts(roles.student, [render_messages(roles.student.system.prompt, p) for p in prompts], counter, "answer")
    answers = [text.strip() for text in raw]
    current = list(answers)  # what the next round critiques: the latest non-empty revision
    history: list[list[dict[str, Any]]] = [[] for _ in batch]
    for r in range(1, rounds + 1):
        principles = [sample_principle(constitution.principles, seed=seed, key=it.key, round=r) for it in batch]
        asks = [critique_messages(p, a, pr, examples) for p, a, pr in zip(prompts, current, principles, strict=True)]
        critiques_raw = _texts(roles.critic, asks, counter, f"critique {r}/{rounds}")
        critiques = [clean_critique(t) for t in critiques_raw]
        asks = [
            revision_messages(p, a, pr, c, examples)
            for p, a, pr, c in zip(prompts, current, principles, critiques, strict=True)
        ]
        revisions_raw = _texts(roles.reviser, asks, counter, f"revise {r}/{rounds}")
        for i, text in enumerate(revisions_raw):
            revision = clean_revision(text)
            changed = bool(revision) and revision != current[i]
            history[i].append(
                {
                    "round": r,
                    "principle": principles[i].name,
                    "critique": critiques[i],
                    "revision": revision,
                    "changed": changed,
                    "critique_raw": critiques_raw[i],
                    "revision_raw": text,
                }
            )
            if revision:  # an empty revision leaves the answer as it was for the next round
                current[i] = revision
    steps = []
    for i, item in enumerate(batch):
        revised = any(step["revision"] for step in history[i])
        final = current[i] if revised else ""
        step: dict[str, Any] = {
            "id": item.id,
            "prompt": item.prompt,
            "category": item.category,
            "answer": answers[i],
            "answer_raw": raw[i],
            "rounds": history[i],
            "revision": final,
            "changed": bool(final) and final != answers[i],
        }
        step["outcome"] = outcome(step)
        steps.append(step)
    return steps


def outcome(step: dict[str, Any]) -> Outcome:
    """What a step gives the preference file: a pair, or the reason it is skipped."""
    if not step["revision"]:
        return "empty_revision"
    if not step["answer"]:
        return "empty_answer"  # nothing to reject: a pair needs two non-empty sides
    if step["revision"] == step["answer"]:
        return "unchanged"
    return "pair"


def read_steps(path: Path) -> dict[str, dict[str, Any]]:
    """The steps a run has finished, by prompt id. A torn last line (a killed writer) is skipped: redone."""
    steps: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return steps
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
                steps[str(row["id"])] = row
            except (ValueError, KeyError, TypeError):
                continue
    return steps


def _jsonl(rows: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_outputs(
    prompts: Sequence[CaiPrompt],
    steps: dict[str, dict[str, Any]],
    out: Path,
    *,
    generated: int,
    rounds: int,
    reward: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write sft.jsonl, preference.jsonl and (last) summary.json atomically; return the summary."""
    from tailorlm.serve.stats import wilson_interval

    ordered = [steps[p.id] for p in prompts if p.id in steps]
    sft = [
        {"messages": [{"role": "user", "content": s["prompt"]}, {"role": "assistant", "content": s["revision"]}]}
        for s in ordered
        if s["revision"]
    ]
    pairs = [
        {"prompt": s["prompt"], "chosen": s["revision"], "rejected": s["answer"]}
        for s in ordered
        if s["outcome"] == "pair"
    ]
    atomic_write_text(out / SFT_FILE, _jsonl(sft))
    atomic_write_text(out / PREFERENCE_FILE, _jsonl(pairs))
    outcomes = Counter(s["outcome"] for s in ordered)
    changed = sum(1 for s in ordered if s["changed"])
    ci = wilson_interval(changed, len(ordered))
    summary: dict[str, Any] = {
        "prompts": len(prompts),
        "done": len(ordered),
        "generated_now": generated,
        "rounds": rounds,
        "revised": sum(1 for s in ordered if s["revision"]),
        "changed": changed,
        "changed_rate": changed / len(ordered) if ordered else None,
        "changed_rate_ci95": list(ci) if ci else None,
        "sft_records": len(sft),
        "pairs": len(pairs),
        "skipped": {k: outcomes.get(k, 0) for k in ("empty_answer", "empty_revision", "unchanged")},
        "principles": dict(Counter(r["principle"] for s in ordered for r in s["rounds"]).most_common()),
        "reward": reward,
        "files": {
            name: str((out / name).absolute()) for name in (STEPS_FILE, SFT_FILE, PREFERENCE_FILE, SUMMARY_FILE)
        },
    }
    atomic_write_json(out / SUMMARY_FILE, summary)
    return summary


def score_revisions(
    reward_model: str | Path, prompts: Sequence[CaiPrompt], steps: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The reward model's score of each original answer and its final revision (prompts where both are non-empty):
    the means, and how often the revision scores higher (ties ½), with a bootstrap 95% CI."""
    from tailorlm.train.align.compare import win_rate
    from tailorlm.train.align.scorer import RewardModelScorer

    scored = [steps[p.id] for p in prompts if p.id in steps and steps[p.id]["answer"] and steps[p.id]["revision"]]
    if not scored:
        return {"n": 0}
    scorer = RewardModelScorer(reward_model)
    conversations = [[{"role": "user", "content": s["prompt"]}] for s in scored]
    before = scorer.score(conversations, [s["answer"] for s in scored])
    after = scorer.score(conversations, [s["revision"] for s in scored])
    wins = win_rate(after, before)
    return {
        "reward_model": str(reward_model),
        "n": len(scored),
        "answer_mean": sum(before) / len(before),
        "revision_mean": sum(after) / len(after),
        "revision_win_rate": wins["win_rate"],
        "revision_win_rate_ci95": [wins["ci_low"], wins["ci_high"]],
    }


def _start(cfg: CaiConfig, run: Run) -> tuple[list[CaiPrompt], Constitution]:
    """The prompts and constitution of this run: copied into it on the first start, read back on a resume, so a
    resumed run finishes what it began even if the source files changed since."""
    art = run.artifacts
    if (art / PROMPTS_FILE).is_file():
        rows = [json.loads(line) for line in (art / PROMPTS_FILE).read_text(encoding="utf-8").splitlines() if line]
        return [CaiPrompt(**row) for row in rows], load_constitution(art / CONSTITUTION_FILE)
    constitution = load_constitution(cfg.constitution)
    prompts = load_prompts(cfg.prompts, cfg.limit)
    # The constitution first: the prompts file is the marker that both copies are in place.
    atomic_write_yaml(art / CONSTITUTION_FILE, constitution.model_dump(mode="json"))
    atomic_write_text(art / PROMPTS_FILE, _jsonl([p.__dict__ for p in prompts]))
    source = Path(cfg.prompts) if cfg.prompts else RED_TEAM_PROMPTS
    run.record_dataset("prompts", source, sha256_file(source), len(prompts))
    return prompts, constitution


def run_cai(
    cfg: CaiConfig, run: Run, *, roles: Roles | None = None, on_progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Run (or resume) the pipeline inside ``run`` and write its outputs; returns the summary.

    ``roles`` overrides the engines built from ``cfg`` (tests pass fakes). Nothing is loaded when every prompt is
    already done, so resuming a finished run only rewrites the outputs.
    """
    art = run.artifacts
    prompts, constitution = _start(cfg, run)
    done = read_steps(art / STEPS_FILE)
    pending = [p for p in prompts if p.id not in done]
    run.logger.info("cai: %d prompts, %d done, %d to go", len(prompts), len(prompts) - len(pending), len(pending))
    if pending:
        counter = StageProgress(total=len(pending) * (1 + 2 * cfg.rounds), report=on_progress)
        counter.start("loading models")
        roles = roles or build_roles(cfg)
        for start in range(0, len(pending), cfg.batch_size):
            batch = pending[start : start + cfg.batch_size]
            steps = process_batch(batch, roles, constitution, rounds=cfg.rounds, seed=cfg.seed, counter=counter)
            # One fsynced append per batch: a kill loses at most this batch, and a torn line is redone.
            append_text(art / STEPS_FILE, _jsonl(steps), fsync=True)
            done.update((s["id"], s) for s in steps)
    reward = score_revisions(cfg.reward_model, prompts, done) if cfg.reward_model else None
    summary = write_outputs(prompts, done, art, generated=len(pending), rounds=cfg.rounds, reward=reward)
    metrics = {k: v for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    run.write_metrics({"cai": {**metrics, "skipped": summary["skipped"], **({"reward": reward} if reward else {})}})
    return summary
