"""`tailor data pairs`: preference pairs from a System's own answers, sampled N per prompt and ranked by a scorer.

    items = prompts_from_task(task, system)                  # the task's train: records, through the System's prompt
    scorer = MetricScorer(task.primary, system.prompt)        # or JudgeScorer(engine), RewardScorer(path)
    result = build_pairs(items, engine, scorer, out=Path("pairs.jsonl"), n=4, params=params)

For each prompt the pipeline samples ``n`` answers, scores them, and keeps the best as ``chosen`` and the worst as
``rejected``: the best-vs-worst-of-N pairs of Self-Rewarding Language Models (Yuan et al. 2024). They are on-policy,
and the prompt is the exact message list the model answered, so a DPO run trains on what the System is really
shown. A prompt whose answers all score the same gives no pair: it says nothing about what is better, and is
counted instead.

Files, all beside ``out``:

- ``pairs.jsonl``: canonical preference records (``prompt`` a list of messages, ``chosen``/``rejected`` one
  assistant message each), loadable by ``load_dataset(..., kind="preference")``; written atomically at the end.
- ``pairs.scores.jsonl``: one line per prompt with every sample, its score, and which two became the pair (or why
  none did); written atomically at the end.
- ``pairs.jsonl.partial``: the journal of finished prompts, appended and fsynced after every chunk while running.
  A killed run loses at most one chunk: run the same command again and it goes on where it stopped. The journal
  is removed once the two files above are complete; a rerun after that reuses the scores file and samples nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tailorlm.core.io import append_text, atomic_write_text
from tailorlm.core.system import PromptSpec, System
from tailorlm.core.task import Task
from tailorlm.data.issues import Issue
from tailorlm.data.records import validate_record
from tailorlm.errors import DataError, TailorError
from tailorlm.models.engines.base import Engine, GenerationParams, Message

SCORERS = ("metric", "judge", "reward")
DEFAULT_CHUNK = 8  # prompts per chunk: a kill loses at most this many prompts' samples

NO_REFERENCE = "no reference answer (the metric scorer needs one)"
TIED = "all answers scored the same"
TOO_FEW = "fewer than 2 non-empty, scored answers"


@dataclass(frozen=True)
class PromptItem:
    """One prompt to sample: the messages the model is sent, and the reference answers if the data has any."""

    id: str
    messages: list[Message]
    references: list[str] | None = None


class Scorer(Protocol):
    """Scores answers, higher is better. ``nan`` means "could not score" (e.g. a judge gave no rating)."""

    def score(
        self,
        prompts: Sequence[list[dict[str, Any]]],
        completions: Sequence[str],
        references: Sequence[list[str] | None],
    ) -> list[float]: ...


# --- scorers --------------------------------------------------------------------------------------------------------


class MetricScorer:
    """The task's metric against the reference: right beats wrong (a verifiable reward).

    The answer is read out of each completion as the eval harness reads it (the System's ``answer`` extraction),
    while the pair keeps the whole completion: that is the text the model wrote and DPO learns from. A corpus
    metric (BLEU, macro-F1) scores each answer as a corpus of one. Metrics that read per-example metadata (a JSON
    schema, tool definitions) see none here.
    """

    needs_reference = True

    def __init__(self, metric: str, prompt: PromptSpec | None = None) -> None:
        from tailorlm.eval.metrics import get_metric

        self.metric = get_metric(metric)
        self.prompt = prompt
        self.needs_reference = self.metric.needs_reference
        self.name = f"metric:{metric}"

    def score(
        self,
        prompts: Sequence[list[dict[str, Any]]],
        completions: Sequence[str],
        references: Sequence[list[str] | None],
    ) -> list[float]:
        from tailorlm.prompting.answerer import extract

        sign = 1.0 if self.metric.higher_is_better else -1.0
        scores = []
        for completion, refs in zip(completions, references, strict=True):
            answer = extract(self.prompt, completion) or ""
            example = {"reference": refs, "metadata": {}}
            try:
                if self.metric.per_example is not None:
                    value = self.metric.per_example(answer, refs, example)
                else:
                    value = self.metric.corpus([answer], [refs])  # type: ignore[misc]  # one of the two is set
            except ValueError:  # e.g. numeric_match on a reference with no number: this answer cannot be scored
                value = math.nan
            scores.append(sign * float(value))
        return scores


def _has_logits(engine: Any) -> bool:
    # The judge's logprob mode reads next-token probabilities, which only a local transformers engine exposes.
    return callable(getattr(engine, "model", None)) and hasattr(engine, "tokenizer") and hasattr(engine, "render")


class JudgeScorer:
    """A judge System rates each answer 1-10 (MT-Bench single-answer grading, ``eval/judge.py``).

    The judge sees the last user turn as the instruction, and the reference when there is one. A local judge is
    read in logprob mode (the expected rating under its next-token distribution): far steadier for a small model
    than parsing a generated verdict, and ties are rarer.
    """

    needs_reference = False

    def __init__(self, engine: Engine | Callable[[], Engine], *, name: str = "judge", scale: int = 10) -> None:
        self._engine = engine
        self.scale = scale
        self.name = name

    @property
    def engine(self) -> Engine:
        if not hasattr(self._engine, "generate"):  # built on first use: a resumed run may need no judge at all
            self._engine = self._engine()  # type: ignore[operator]
        return self._engine  # type: ignore[return-value]

    def score(
        self,
        prompts: Sequence[list[dict[str, Any]]],
        completions: Sequence[str],
        references: Sequence[list[str] | None],
    ) -> list[float]:
        from tailorlm.eval.judge import judge_single

        items = []
        for messages, completion, refs in zip(prompts, completions, references, strict=True):
            instruction = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
            item = {"instruction": instruction or "", "output": completion}
            items.append(item | ({"reference": refs[0]} if refs else {}))
        engine = self.engine
        grades = judge_single(engine, items, self.scale, mode="logprob" if _has_logits(engine) else "generate")
        return [math.nan if g.get("score") is None else float(g["score"]) for g in grades]  # type: ignore[arg-type]


class RewardScorer:
    """A trained reward model (``tailor train reward``): its scalar score of prompt + answer."""

    needs_reference = False

    def __init__(self, path: str | Path) -> None:
        try:
            from tailorlm.train.align.scorer import RewardModelScorer
        except ImportError as err:
            # The reward trainer may be absent (an older install); a missing third-party package inside it is a
            # different problem, and keeps its own message.
            if isinstance(err, ModuleNotFoundError) and not (err.name or "").startswith("tailorlm"):
                raise
            raise TailorError(
                "--scorer reward needs tailorlm.train.align.scorer, which this installation lacks",
                hint="use --scorer metric or --scorer judge",
            ) from err
        self.model = RewardModelScorer(path)
        self.name = f"reward:{_weights_key(Path(path))}"

    def score(
        self,
        prompts: Sequence[list[dict[str, Any]]],
        completions: Sequence[str],
        references: Sequence[list[str] | None],
    ) -> list[float]:
        return [float(s) for s in self.model.score(prompts, completions)]


def _weights_key(path: Path) -> str:
    """What a reward model's scores depend on; part of the scorer's name, which keys the journal, so that a model
    retrained at the same path is not credited with the old one's scores."""
    from tailorlm.eval.cache import system_cache_key

    try:  # a reward model is a System with a regression head: its key stamps the weights it loads
        return system_cache_key(System.load(path))
    except (TailorError, OSError):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.exists() else []
        return _digest([str(path.resolve())] + [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files])


# --- prompts --------------------------------------------------------------------------------------------------------


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _refs(value: Any) -> list[str] | None:
    items = value if isinstance(value, list) else [] if value is None else [value]
    refs = [str(r) for r in items if str(r).strip()]
    return refs or None


def prompts_from_task(task: Task, system: System, tokenizer: Any = None) -> list[PromptItem]:
    """The task's ``train:`` records (read as the ladder reads them), rendered through the System's prompt."""
    from tailorlm.ladder.training_data import load_training, references
    from tailorlm.prompting.answerer import build_requests

    examples = load_training(task).examples
    messages = build_requests(system.prompt, [ex.text for ex in examples], tokenizer)
    return [PromptItem(ex.id, m, references(ex) or None) for ex, m in zip(examples, messages, strict=True)]


def prompts_from_file(
    path: str | Path, system: System, tokenizer: Any = None, *, strict: bool = True, **field_options: str
) -> tuple[list[PromptItem], list[Issue]]:
    """Prompts from a data file, and the issues of the records left out (``strict=False``; else they raise).

    ``field_options`` map columns, e.g. ``input_field="prompt"``. What the prompt of a record is depends on its kind:

    - eval records (``input``, ``reference``?, ``context``?): the input (after its context) through the System's
      prompt, the reference kept for the metric scorer;
    - chat records: the conversation up to its last user turn, the assistant turn after it as the reference;
    - preference or binary records (HH transcripts included): their prompts; a plain-text prompt goes through
      the System's prompt, a message list is sent as it is.
    """
    from tailorlm.data.load import load_dataset
    from tailorlm.prompting.answerer import build_requests

    dataset = load_dataset(path, extra="ignore", strict=strict, **field_options)
    found: list[tuple[str | list[Message], list[str] | None]] = []  # (text or messages, references) per record
    for r in dataset.records:
        if dataset.kind == "eval":
            found.append((f"{r.context}\n\n{r.input}" if r.context else r.input, _refs(r.reference)))
        elif dataset.kind == "chat":
            messages = [m.model_dump(exclude_none=True) for m in r.messages]
            users = [k for k, m in enumerate(messages) if m["role"] == "user"]
            if users:
                after = messages[users[-1] + 1 : users[-1] + 2]
                ref = after[0].get("content") if after and after[0]["role"] == "assistant" else None
                found.append((messages[: users[-1] + 1], _refs(ref)))
        elif dataset.kind in ("preference", "binary"):
            prompt = r.prompt if isinstance(r.prompt, str) else [m.model_dump(exclude_none=True) for m in r.prompt]
            found.append((prompt, None))
        else:
            raise DataError(
                f"{path} holds {dataset.kind} records ({dataset.format} format): no prompts to answer",
                hint="give eval records ({input, reference}), chat or preference records, or a task.yaml",
            )
    if not found:
        raise DataError(f"{path}: no prompts (no chat record has a user turn)")
    # Texts go through the prompt program in one call: few-shot selection embeds all inputs at once.
    texts = [p for p, _ in found if isinstance(p, str)]
    rendered = iter(build_requests(system.prompt, texts, tokenizer))
    items = []
    for i, (prompt, refs) in enumerate(found):
        messages = next(rendered) if isinstance(prompt, str) else prompt
        # Ids from the content, so that they stay stable when the file is reordered or extended.
        items.append(PromptItem(f"{i}-{_digest(messages)[:12]}", messages, refs))
    return items, dataset.issues


@dataclass
class Prompts:
    """What ``load_prompts`` read: the prompts, the task if the source was one, and the records left out."""

    items: list[PromptItem]
    task: Task | None = None
    issues: list[Issue] = field(default_factory=list)

    @property
    def left_out(self) -> int:
        """Records left out for their issues (a record can have several)."""
        return len({(i.path, i.line) for i in self.issues})


def load_prompts(source: str | Path, system: System, *, skip_invalid: bool = False, **field_options: str) -> Prompts:
    """The prompts of a task.yaml (its ``train:`` records) or of a data file.

    A bad record is a ``DataError`` naming file:line: field, unless ``skip_invalid`` (a data file only: a task's
    training data is the ladder's and is held to its rules), which leaves it out and reports it in ``issues``.
    """
    from tailorlm.core.system import LOCAL_ENGINES

    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such file")
    tokenizer = None
    if system.prompt and system.prompt.max_prompt_tokens and system.engine in LOCAL_ENGINES:
        from tailorlm.models.load import load_tokenizer

        tokenizer = load_tokenizer(system.model)  # fits the demonstrations into the prompt budget, as eval does
    if source.suffix in (".yaml", ".yml"):
        task = Task.load(source)
        return Prompts(prompts_from_task(task, system, tokenizer), task)
    items, issues = prompts_from_file(source, system, tokenizer, strict=not skip_invalid, **field_options)
    return Prompts(items, issues=issues)


def make_scorer(
    kind: str,
    *,
    system: System,
    task: Task | None = None,
    metric: str | None = None,
    judge: System | None = None,
    reward_model: str | Path | None = None,
) -> Scorer:
    """The scorer ``--scorer`` names, with a clear error for what it is missing."""
    if kind == "metric":
        name = metric or (task.primary if task else None)
        if name is None:
            raise DataError("the metric scorer needs a metric for a prompts file", hint="pass --metric f1, or a task")
        return MetricScorer(name, system.prompt)
    if kind == "judge":
        if judge is None:
            raise DataError("the judge scorer needs a judge System", hint="pass --judge SYSTEM (e.g. --judge default)")
        from tailorlm.eval.cache import system_cache_key
        from tailorlm.models.build import build_engine

        return JudgeScorer(lambda: build_engine(judge), name=f"judge:{system_cache_key(judge)}")
    if kind == "reward":
        if reward_model is None:
            raise DataError("the reward scorer needs a reward model", hint="pass --reward-model PATH")
        return RewardScorer(reward_model)
    raise DataError(f"unknown scorer {kind!r}", hint=f"choose one of: {', '.join(SCORERS)}")


# --- pairing --------------------------------------------------------------------------------------------------------


def _normalized(text: str) -> str:
    return " ".join(text.split())


def pick_pair(samples: Sequence[str], scores: Sequence[float | None]) -> tuple[int, int] | str:
    """``(best, worst)`` sample indices, or why there is no pair.

    Empty answers and unscored ones (``None``/``nan``) take no part: a preference record needs two non-empty
    answers. Among equal scores the earliest sample wins, so the choice is deterministic.
    """
    valid = [
        i
        for i, (s, x) in enumerate(zip(samples, scores, strict=True))
        if s.strip() and x is not None and not math.isnan(x)
    ]
    if len(valid) < 2:
        return TOO_FEW
    best = max(valid, key=lambda i: (scores[i], -i))
    worst = min(valid, key=lambda i: (scores[i], i))
    if scores[best] == scores[worst] or _normalized(samples[best]) == _normalized(samples[worst]):
        return TIED
    return best, worst


def _json_score(x: float) -> float | None:
    return None if math.isnan(x) or math.isinf(x) else x  # JSON has no NaN: "could not score" is null


@dataclass
class PairsResult:
    """What ``build_pairs`` did: prompts seen, pairs written, prompts reused from a previous run, and skip reasons."""

    prompts: int
    pairs: int
    reused: int
    out: Path
    scores_path: Path
    skipped: dict[str, int] = field(default_factory=dict)


def side_paths(out: Path) -> tuple[Path, Path]:
    """``(scores file, journal)`` beside ``out``: ``pairs.scores.jsonl`` and ``pairs.jsonl.partial``."""
    stem = out.name.removesuffix(".jsonl")
    return out.with_name(f"{stem}.scores.jsonl"), out.with_name(f"{out.name}.partial")


def _read_entries(*paths: Path) -> dict[str, dict[str, Any]]:
    """Finished prompts by key from the scores file and the journal; a torn last line (a kill) is skipped."""
    done: dict[str, dict[str, Any]] = {}
    for path in paths:
        if not path.exists():
            continue
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                    if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                        done[entry["key"]] = entry
                except ValueError:
                    continue
    return done


def _chunk_seed(seed: int, keys: Sequence[str], j: int) -> int:
    # One seed per (chunk, sample index): every engine honours one seed per call (vLLM and OpenAI per request), so
    # sample j of all prompts is drawn in one call, and the N calls differ. Derived from the chunk's content, so a
    # resumed run draws the same samples for the same chunk.
    return random.Random(f"{seed}:{keys[0]}:{j}").randrange(2**31)


def build_pairs(
    items: Sequence[PromptItem],
    engine: Engine | Callable[[], Engine],
    scorer: Scorer,
    *,
    out: str | Path,
    n: int = 4,
    params: GenerationParams | None = None,
    seed: int = 0,
    system_key: str = "",
    chunk_size: int = DEFAULT_CHUNK,
    on_progress: Callable[[int], None] | None = None,
) -> PairsResult:
    """Sample ``n`` answers per prompt with ``engine``, score them, write best ≻ worst pairs to ``out``.

    ``engine`` may be a callable that builds it, called only if something is left to sample. ``system_key``
    identifies what answers (e.g. ``eval.cache.system_cache_key``): with the prompt, the decoding, ``n``, the seed
    and the scorer it keys the journal, so a rerun with other settings samples afresh instead of reusing stale
    answers. ``on_progress(k)`` is called as ``k`` more prompts finish (reused ones first).
    """
    out = Path(out)
    params = params or GenerationParams(max_new_tokens=256, temperature=0.8)
    if n < 2:
        raise TailorError(f"--n must be at least 2 to make a pair, got {n}")
    if params.greedy:
        raise TailorError(
            "greedy decoding (temperature 0) gives the same answer n times", hint="use --temperature 0.8"
        )
    scores_path, journal = side_paths(out)
    scorer_name = getattr(scorer, "name", type(scorer).__name__)
    settings = {"system": system_key, "params": params.model_dump(mode="json"), "n": n, "seed": seed}
    settings["scorer"] = scorer_name
    needs_reference = bool(getattr(scorer, "needs_reference", False))

    keys = [_digest({"messages": it.messages, "references": it.references, **settings}) for it in items]
    done = _read_entries(scores_path, journal)
    reused = sum(k in done for k in keys)
    if on_progress and reused:
        on_progress(reused)
    todo = [(k, it) for k, it in zip(keys, items, strict=True) if k not in done]
    skipped: Counter[str] = Counter()
    if needs_reference:
        skipped[NO_REFERENCE] = sum(it.references is None for _, it in todo)
        todo = [(k, it) for k, it in todo if it.references is not None]
        if on_progress and skipped[NO_REFERENCE]:
            on_progress(skipped[NO_REFERENCE])
    if needs_reference and not todo and not reused:
        raise DataError(
            f"none of the {len(items)} prompt(s) has a reference answer: the metric scorer has nothing to compare",
            hint="map the answer column (train.fields: {reference: COLUMN}), or use --scorer judge or reward",
        )

    for start in range(0, len(todo), chunk_size):
        chunk = todo[start : start + chunk_size]
        if not hasattr(engine, "generate"):
            engine = engine()  # type: ignore[operator]
        chunk_keys = [k for k, _ in chunk]
        samples: list[list[str]] = [[] for _ in chunk]
        for j in range(n):
            call = params.model_copy(update={"seed": _chunk_seed(seed, chunk_keys, j)})
            completions = engine.generate([it.messages for _, it in chunk], call)  # type: ignore[union-attr]
            for row, c in zip(samples, completions, strict=True):
                row.append(c.text)
        flat = [(it, s) for (_, it), row in zip(chunk, samples, strict=True) for s in row]
        scores = scorer.score([it.messages for it, _ in flat], [s for _, s in flat], [it.references for it, _ in flat])
        if len(scores) != len(flat):
            raise TailorError(f"the {scorer_name} scorer returned {len(scores)} scores for {len(flat)} answers")
        lines = []
        for i, ((key, it), row) in enumerate(zip(chunk, samples, strict=True)):
            mine = [_json_score(float(x)) for x in scores[i * n : (i + 1) * n]]
            entry = {"key": key, "id": it.id, "prompt": it.messages, "samples": row, "scores": mine}
            done[key] = entry
            lines.append(json.dumps(entry, ensure_ascii=False) + "\n")
        append_text(journal, "".join(lines), fsync=True)
        if on_progress:
            on_progress(len(chunk))

    return _finish(items, keys, done, out, scores_path, journal, skipped, reused)


def _finish(
    items: Sequence[PromptItem],
    keys: Sequence[str],
    done: Mapping[str, dict[str, Any]],
    out: Path,
    scores_path: Path,
    journal: Path,
    skipped: Counter[str],
    reused: int,
) -> PairsResult:
    """Pair every finished prompt, write the pairs and the scores atomically, then drop the journal."""
    pairs, score_lines = [], []
    for key in keys:
        entry = done.get(key)
        if entry is None:
            continue  # no reference: counted already
        picked = pick_pair(entry["samples"], entry["scores"])
        row = {k: entry[k] for k in ("key", "id", "prompt", "samples", "scores")}
        if isinstance(picked, str):
            skipped[picked] += 1
            row |= {"chosen": None, "rejected": None, "skipped": picked}
        else:
            best, worst = picked
            record = {
                "prompt": entry["prompt"],
                "chosen": [{"role": "assistant", "content": entry["samples"][best]}],
                "rejected": [{"role": "assistant", "content": entry["samples"][worst]}],
            }
            _, problems = validate_record("preference", record)
            if problems:  # e.g. a prompt the loader would refuse: never write a file that does not load
                skipped[f"invalid pair: {problems[0][0]}: {problems[0][1]}"] += 1
                row |= {"chosen": None, "rejected": None, "skipped": "invalid pair"}
            else:
                pairs.append(record)
                row |= {"chosen": best, "rejected": worst, "skipped": None}
        score_lines.append(row)
    atomic_write_text(scores_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in score_lines))
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in pairs))
    journal.unlink(missing_ok=True)
    return PairsResult(
        prompts=len(items),
        pairs=len(pairs),
        reused=reused,
        out=out,
        scores_path=scores_path,
        skipped={k: v for k, v in sorted(skipped.items()) if v},
    )
