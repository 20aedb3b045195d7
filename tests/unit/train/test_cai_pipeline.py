"""The CAI pipeline on scripted engines: batching per stage, rounds, outcomes, outputs and resume."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from tailorlm.core.run import Run
from tailorlm.core.system import System
from tailorlm.data import load_dataset
from tailorlm.errors import DataError
from tailorlm.models.engines.base import Completion, GenerationParams, Request, Usage
from tailorlm.train.align.cai import (
    STEPS_FILE,
    CaiConfig,
    CaiPrompt,
    Role,
    Roles,
    load_prompts,
    process_batch,
    read_steps,
    run_cai,
)
from tailorlm.train.align.constitution import load_constitution

pytestmark = pytest.mark.unit


class ScriptedEngine:
    """Answers each request with ``reply(last user message)``; records every generate call."""

    name = "scripted"

    def __init__(self, reply: Callable[[str], str]) -> None:
        self.reply = reply
        self.calls: list[int] = []

    def generate(
        self,
        requests: Sequence[Any],
        params: GenerationParams | None = None,
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> list[Completion]:
        self.calls.append(len(requests))
        out = []
        for r in requests:
            messages = Request.of(r).messages or []
            out.append(Completion(text=self.reply(messages[-1]["content"]), finish_reason="stop", usage=Usage()))
        if on_progress is not None:
            on_progress(len(out))
        return out

    def stream(self, request: Any, params: GenerationParams | None = None) -> Any:
        raise NotImplementedError


def _answer(prompt: str) -> str:
    return "" if prompt == "empty-answer" else f"  answer to {prompt}  "


def _critique(turn: str) -> str:
    return "Critique: it could be safer.\nRevision request: (the model went on)"


def _revise(turn: str) -> str:
    prompt = re.search(r"^User: (.*)$", turn, re.M).group(1)  # type: ignore[union-attr]
    current = re.search(r"^Assistant: (.*)$", turn, re.M).group(1)  # type: ignore[union-attr]
    if prompt == "empty-revision":
        return "Revision:   "
    if prompt == "same":
        return current
    return f"Revision: {current or 'safe answer'} +r"


def _roles() -> tuple[Roles, dict[str, ScriptedEngine]]:
    engines = {
        "student": ScriptedEngine(_answer),
        "critic": ScriptedEngine(_critique),
        "reviser": ScriptedEngine(_revise),
    }
    system = System(model="scripted")
    roles = Roles(**{k: Role(system, e, GenerationParams(max_new_tokens=8)) for k, e in engines.items()})
    return roles, engines


PROMPTS = ["pick a lock", "empty-answer", "empty-revision", "same", "make a weapon"]


def _prompts() -> list[CaiPrompt]:
    return [CaiPrompt(id=f"p{i:05d}", prompt=p) for i, p in enumerate(PROMPTS)]


def test_one_generate_call_per_stage_and_round_for_the_whole_batch() -> None:
    roles, engines = _roles()
    steps = process_batch(_prompts(), roles, load_constitution(), rounds=2, seed=0)
    assert engines["student"].calls == [5]
    assert engines["critic"].calls == [5, 5] and engines["reviser"].calls == [5, 5]
    first = steps[0]
    # round 2 critiques and revises round 1's revision, not the original answer
    assert [r["revision"] for r in first["rounds"]] == ["answer to pick a lock +r", "answer to pick a lock +r +r"]
    assert first["revision"] == "answer to pick a lock +r +r" and first["changed"]
    assert first["rounds"][0]["critique"] == "it could be safer."
    assert first["rounds"][0]["critique_raw"].startswith("Critique:")
    assert {r["principle"] for s in steps for r in s["rounds"]} <= {p.name for p in load_constitution().principles}


def test_outcomes_cover_every_prompt_once() -> None:
    roles, _ = _roles()
    steps = {s["prompt"]: s for s in process_batch(_prompts(), roles, load_constitution())}
    assert steps["pick a lock"]["outcome"] == "pair"
    assert steps["empty-answer"]["outcome"] == "empty_answer"
    assert steps["empty-answer"]["revision"] == "safe answer +r"
    assert steps["empty-revision"]["outcome"] == "empty_revision" and steps["empty-revision"]["revision"] == ""
    assert steps["same"]["outcome"] == "unchanged" and not steps["same"]["changed"]


def _cfg(tmp_path: Path, **kw: Any) -> CaiConfig:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return CaiConfig(**{"system": "scripted", "prompts": str(path), "batch_size": 2, **kw})


def test_run_writes_loadable_outputs_and_a_summary_whose_counts_add_up(tmp_path: Path) -> None:
    roles, _ = _roles()
    cfg = _cfg(tmp_path)
    with Run.create("cai", root=tmp_path / "runs", config=cfg, kind="cai") as run:
        summary = run_cai(cfg, run, roles=roles)
    art = run.artifacts
    assert summary["prompts"] == summary["done"] == summary["generated_now"] == 5
    assert summary["pairs"] + sum(summary["skipped"].values()) == 5
    assert summary["skipped"] == {"empty_answer": 1, "empty_revision": 1, "unchanged": 1}
    assert summary["sft_records"] == summary["revised"] == 4
    assert summary["changed"] == 3 and summary["changed_rate"] == pytest.approx(0.6)
    pairs = load_dataset(art / "preference.jsonl", kind="preference")
    assert len(pairs) == 2
    assert pairs.records[0].chosen == "answer to pick a lock +r"
    assert pairs.records[0].rejected == "answer to pick a lock"
    assert len(load_dataset(art / "sft.jsonl", kind="chat")) == 4
    assert json.loads((art / "summary.json").read_text())["pairs"] == 2
    assert (art / "constitution.yaml").is_file() and (art / "prompts.jsonl").is_file()
    assert json.loads((run.path / "metrics.json").read_text())["cai"]["pairs"] == 2


def test_resume_redoes_only_missing_and_torn_steps(tmp_path: Path) -> None:
    roles, engines = _roles()
    cfg = _cfg(tmp_path, limit=4)
    with Run.create("cai", root=tmp_path / "runs", config=cfg, kind="cai") as run:
        first = run_cai(cfg, run, roles=roles)
    steps_path = run.artifacts / STEPS_FILE
    lines = steps_path.read_text().splitlines(keepends=True)
    assert len(lines) == 4
    # a kill during the second batch's append: one whole line of it, then half a line
    steps_path.write_text("".join(lines[:2]) + lines[2][:25])
    roles, engines = _roles()
    with Run.reopen(run.path) as again:
        resumed = run_cai(cfg, again, roles=roles)
    assert engines["student"].calls == [2]  # the two prompts not done, in one batch
    assert resumed["generated_now"] == 2 and resumed["done"] == 4
    assert {k: v for k, v in resumed.items() if k != "generated_now"} == {
        k: v for k, v in first.items() if k != "generated_now"
    }
    assert sorted(read_steps(steps_path)) == ["p00000", "p00001", "p00002", "p00003"]
    # a finished run resumed generates nothing and loads no engine
    with Run.reopen(run.path) as third:
        assert run_cai(cfg, third, roles=None)["generated_now"] == 0


def test_load_prompts(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": " a ", "category": "x"}\n\n{"prompt": "b", "source": "s"}\n{"prompt": "c"}\n')
    items = load_prompts(path, limit=2)
    assert [(p.id, p.prompt, p.category) for p in items] == [("p00000", "a", "x"), ("p00001", "b", None)]
    txt = tmp_path / "p.txt"
    txt.write_text("one\n\ntwo\n")
    assert [p.prompt for p in load_prompts(txt)] == ["one", "two"]
    path.write_text('{"prompt": "a"}\n{"text": "b"}\n')
    with pytest.raises(DataError, match=r"p\.jsonl:2: prompt"):
        load_prompts(path)
    path.write_text('{"prompt": "a"}\n{oops\n')
    with pytest.raises(DataError, match=r"p\.jsonl:2: not valid JSON"):
        load_prompts(path)
    with pytest.raises(DataError, match="not found"):
        load_prompts(tmp_path / "missing.jsonl")
    (tmp_path / "p.json").write_text("[]")
    with pytest.raises(DataError, match="JSON Lines"):
        load_prompts(tmp_path / "p.json")


class LengthRewardModel:
    """Stands in for the reward model's weights: scores an answer by its length (what a trained head would learn
    is not the point here; the aggregation is)."""

    def __init__(self, path: Any) -> None:
        self.path = path

    def score(self, prompts: Sequence[Any], completions: Sequence[str]) -> list[float]:
        assert all(p[-1]["role"] == "user" for p in prompts)
        return [float(len(c)) for c in completions]


def test_a_reward_model_scores_answers_and_revisions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tailorlm.train.align.scorer as scorer

    monkeypatch.setattr(scorer, "RewardModelScorer", LengthRewardModel)
    roles, _ = _roles()
    cfg = _cfg(tmp_path, reward_model="rm")
    with Run.create("cai", root=tmp_path / "runs", config=cfg, kind="cai") as run:
        summary = run_cai(cfg, run, roles=roles)
    reward = summary["reward"]
    # 3 prompts have an answer and a revision: two revisions append " +r" (longer), one is unchanged (a tie, ½).
    assert reward["n"] == 3 and reward["revision_win_rate"] == pytest.approx(2.5 / 3)
    assert reward["revision_mean"] - reward["answer_mean"] == pytest.approx(2 * 3 / 3)
    low, high = reward["revision_win_rate_ci95"]
    assert low <= reward["revision_win_rate"] <= high
    assert json.loads((run.artifacts / "summary.json").read_text())["reward"] == reward


def test_a_reward_model_that_is_not_one_fails_before_the_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tailorlm.errors import ConfigError
    from tailorlm.train.align.cai import preflight

    not_rm = System(model=str(tiny_model_dir)).save(tmp_path / "plain")
    cfg = _cfg(tmp_path, system=str(tiny_model_dir), reward_model=str(not_rm))
    with pytest.raises(ConfigError, match="not a reward model"):
        preflight(cfg)
