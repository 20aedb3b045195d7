"""`tailor data pairs`: sample N answers, score, pair best ≻ worst; resumable, and never a half-written file."""

from __future__ import annotations

import json
import math
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tailorlm.cli.main import app
from tailorlm.core.system import AnswerExtraction, PromptSpec, System
from tailorlm.data import load_dataset
from tailorlm.data.pairs import (
    TIED,
    TOO_FEW,
    MetricScorer,
    PromptItem,
    RewardScorer,
    build_pairs,
    pick_pair,
    prompts_from_file,
    side_paths,
)
from tailorlm.errors import TailorError
from tailorlm.models.engines.base import Completion, GenerationParams, Usage

pytestmark = pytest.mark.integration

PARAMS = GenerationParams(max_new_tokens=8, temperature=0.8)


class FakeEngine:
    """Answers ``"<question> #<seed>"``: deterministic per call seed, so two runs draw the same samples."""

    name = "fake"

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.calls = 0
        self.fail_on_call = fail_on_call

    def generate(self, requests: Sequence[Any], params: GenerationParams | None = None, **_: Any) -> list[Completion]:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt  # a kill between chunks
        assert params is not None and params.seed is not None
        out = []
        for messages in requests:
            question = messages[-1]["content"]
            text = "" if "empty" in question else f"{question} #{params.seed}"
            out.append(Completion(text=text, finish_reason="stop", usage=Usage()))
        return out

    def stream(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


class FakeScorer:
    """Score = the sample's seed mod 5; every answer to a "tie" question scores 1; a "nan" question is unscorable."""

    name = "fake"

    def __init__(self) -> None:
        self.seen = 0

    def score(self, prompts: Sequence[Any], completions: Sequence[str], references: Sequence[Any]) -> list[float]:
        self.seen += len(completions)
        scores = []
        for messages, text in zip(prompts, completions, strict=True):
            question = messages[-1]["content"]
            if "tie" in question:
                scores.append(1.0)
            elif "nan" in question:
                scores.append(math.nan)
            else:
                scores.append(float(int(text.rsplit("#", 1)[1]) % 5) if "#" in text else 0.0)
        return scores


def items(*questions: str) -> list[PromptItem]:
    return [PromptItem(f"q{i}", [{"role": "user", "content": q}], ["ref"]) for i, q in enumerate(questions)]


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_pick_pair() -> None:
    assert pick_pair(["a", "b", "c"], [0.5, 0.9, 0.1]) == (1, 2)
    assert pick_pair(["a", "b", "c"], [1.0, 0.0, 1.0]) == (0, 1)  # the earliest best, deterministically
    assert pick_pair(["a", "b"], [0.3, 0.3]) == TIED
    assert pick_pair(["same", " same "], [1.0, 0.0]) == TIED  # the same text twice is no preference
    assert pick_pair(["a", "", " "], [0.0, 1.0, 2.0]) == TOO_FEW  # empty answers take no part
    assert pick_pair(["a", "b", "c"], [math.nan, 1.0, None]) == TOO_FEW


def test_pairs_best_over_worst_and_skips_ties(tmp_path: Path) -> None:
    out = tmp_path / "pairs.jsonl"
    prompts = items("what is up", "a tie", "empty please", "nan here", "second question")
    result = build_pairs(prompts, FakeEngine(), FakeScorer(), out=out, n=4, params=PARAMS, seed=3)
    assert (result.prompts, result.pairs, result.reused) == (5, 2, 0)
    assert result.skipped == {TIED: 1, TOO_FEW: 2}

    scores_path, journal = side_paths(out)
    assert scores_path.name == "pairs.scores.jsonl" and not journal.exists()
    rows = read(scores_path)
    assert [r["id"] for r in rows] == ["q0", "q1", "q2", "q3", "q4"]
    for row in rows:
        assert len(row["samples"]) == len(row["scores"]) == 4
        if row["skipped"] is None:
            assert row["scores"][row["chosen"]] == max(row["scores"])
            assert row["scores"][row["rejected"]] == min(row["scores"])
    assert rows[3]["scores"] == [None] * 4  # nan is written as null: JSON has no NaN

    pairs = load_dataset(out, kind="preference")
    assert (pairs.format, len(pairs)) == ("preference", 2)
    first = pairs[0]
    assert [m.content for m in first.prompt] == ["what is up"]
    assert first.chosen[0].content == rows[0]["samples"][rows[0]["chosen"]]
    assert first.rejected[0].content == rows[0]["samples"][rows[0]["rejected"]]


def test_samples_differ_between_draws(tmp_path: Path) -> None:
    # One seed per sample index: a per-request seed (vLLM, OpenAI) would otherwise give n identical answers.
    build_pairs(items("q"), FakeEngine(), FakeScorer(), out=tmp_path / "p.jsonl", n=4, params=PARAMS)
    [row] = read(side_paths(tmp_path / "p.jsonl")[0])
    assert len(set(row["samples"])) == 4


def test_a_killed_run_resumes_and_matches_an_uninterrupted_one(tmp_path: Path) -> None:
    prompts = items(*(f"question {i}" for i in range(5)))
    whole = tmp_path / "whole.jsonl"
    build_pairs(prompts, FakeEngine(), FakeScorer(), out=whole, n=2, params=PARAMS, chunk_size=2)

    out = tmp_path / "pairs.jsonl"
    scores_path, journal = side_paths(out)
    with pytest.raises(KeyboardInterrupt):  # killed during the second chunk
        build_pairs(prompts, FakeEngine(fail_on_call=3), FakeScorer(), out=out, n=2, params=PARAMS, chunk_size=2)
    assert not out.exists() and not scores_path.exists()  # no half-written output
    assert len(read(journal)) == 2
    with journal.open("a") as f:
        f.write('{"key": "torn')  # a write cut by the kill: skipped on resume

    engine, ticks = FakeEngine(), []
    result = build_pairs(
        prompts, engine, FakeScorer(), out=out, n=2, params=PARAMS, chunk_size=2, on_progress=ticks.append
    )
    assert result.reused == 2 and engine.calls == 2 * 2  # two chunks left, two draws each
    assert sum(ticks) == 5 and ticks[0] == 2
    assert out.read_text() == whole.read_text() and not journal.exists()

    # A rerun of a finished job samples nothing: the engine is never even built.
    def no_engine() -> Any:
        raise AssertionError("the engine must not be built")

    result = build_pairs(prompts, no_engine, FakeScorer(), out=out, n=2, params=PARAMS, chunk_size=2)
    assert result.reused == 5 and out.read_text() == whole.read_text()
    # Other settings (here the seed) are another job: nothing stale is reused.
    engine = FakeEngine()
    assert build_pairs(prompts, engine, FakeScorer(), out=out, n=2, params=PARAMS, seed=9).reused == 0
    assert engine.calls == 2


def test_settings_that_cannot_make_pairs(tmp_path: Path) -> None:
    with pytest.raises(TailorError, match="greedy"):
        build_pairs(items("q"), FakeEngine(), FakeScorer(), out=tmp_path / "p.jsonl", params=GenerationParams())
    with pytest.raises(TailorError, match="at least 2"):
        build_pairs(items("q"), FakeEngine(), FakeScorer(), out=tmp_path / "p.jsonl", n=1, params=PARAMS)
    no_refs = [PromptItem("a", [{"role": "user", "content": "q"}])]
    with pytest.raises(TailorError, match="none of the 1 prompt"):
        build_pairs(no_refs, FakeEngine(), MetricScorer("exact_match"), out=tmp_path / "p.jsonl", params=PARAMS)


def test_metric_scorer_reads_the_answer_as_eval_does() -> None:
    prompt = PromptSpec(answer=AnswerExtraction(method="last_number"))
    scorer = MetricScorer("numeric_match", prompt)
    refs = [["42"], ["42"], ["42"]]
    assert scorer.score([[]] * 3, ["So it is 42.", "It is 41", "no idea"], refs) == [1.0, 0.0, 0.0]
    # A corpus metric scores each answer as a corpus of one.
    bleu = MetricScorer("chrf").score([[]] * 2, ["the cat sat", "dog"], [["the cat sat"], ["the cat sat"]])
    assert bleu[0] > bleu[1]


def test_reward_scorer_adapts_the_reward_model(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    class RewardModelScorer:
        def __init__(self, path: Any) -> None:
            seen["path"] = path

        def score(self, prompts: Any, completions: Any) -> list[float]:
            seen["prompts"] = prompts
            return [float(len(c)) for c in completions]

    module = types.ModuleType("tailorlm.train.align.scorer")
    module.RewardModelScorer = RewardModelScorer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tailorlm.train.align.scorer", module)
    scorer = RewardScorer("rm-dir")
    prompts = [[{"role": "user", "content": "q"}]] * 2
    assert scorer.score(prompts, ["ab", "abcd"], [None, None]) == [2.0, 4.0]
    assert seen == {"path": "rm-dir", "prompts": prompts}


def test_prompts_from_files_of_each_kind(tmp_path: Path) -> None:
    system = System(prompt=PromptSpec(system="Be brief."))
    eval_rows = tmp_path / "eval.jsonl"
    eval_rows.write_text('{"input": "2+2?", "reference": "4"}\n{"input": "Who?", "context": "Bob ran."}\n')
    got, issues = prompts_from_file(eval_rows, system)
    assert issues == []
    assert got[0].messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    assert (got[0].references, got[1].references) == (["4"], None)
    assert got[1].messages[-1]["content"] == "Bob ran.\n\nWho?"

    hh = tmp_path / "hh.jsonl"
    hh.write_text(
        json.dumps({"chosen": "\n\nHuman: hi\n\nAssistant: yo", "rejected": "\n\nHuman: hi\n\nAssistant: no"})
    )
    [item], _ = prompts_from_file(hh, system)
    assert item.messages == [{"role": "user", "content": "hi"}]  # a conversation is sent as it is

    chat = tmp_path / "chat.jsonl"
    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    chat.write_text(json.dumps({"messages": turns}) + "\n")
    [item], _ = prompts_from_file(chat, system)
    assert (item.messages, item.references) == (turns[:1], ["b"])

    prompts_only = tmp_path / "prompts.jsonl"
    prompts_only.write_text('{"prompt": "Tell me a joke."}\n')
    [item], _ = prompts_from_file(prompts_only, System(), input_field="prompt")
    assert item.messages == [{"role": "user", "content": "Tell me a joke."}]


# --- through the CLI, with a tiny random model ---------------------------------------------------------------------


@pytest.fixture
def task_dir(tmp_path: Path, tiny_model_dir: Path) -> Path:
    rows = [{"input": q, "reference": a} for q, a in (("2+2?", "4"), ("Capital of France?", "Paris"), ("Hi?", "hi"))]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "eval.jsonl").write_text(json.dumps(rows[0]) + "\n")
    (tmp_path / "task.yaml").write_text(
        "name: tiny\neval: {path: eval.jsonl}\ntrain: {path: train.jsonl}\nmetrics: [f1]\n"
        "generation: {max_new_tokens: 6}\n"
    )
    System(model=str(tiny_model_dir), engine="hf").save(tmp_path / "system")
    return tmp_path


def test_cli_metric_and_judge_with_a_tiny_model(task_dir: Path) -> None:
    runner = CliRunner()
    out = task_dir / "pairs.jsonl"
    args = ["data", "pairs", str(task_dir / "task.yaml"), "--system", str(task_dir / "system"), "--n", "2"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = read(task_dir / "pairs.scores.jsonl")
    assert len(rows) == 3 and all(len(r["samples"]) == 2 for r in rows)
    # A random model is (almost) never right: the F1 of its answers mostly ties, and those prompts are counted.
    tied = sum(r["skipped"] is not None for r in rows)
    assert out.exists() and len(out.read_text().splitlines()) == 3 - tied
    if tied:
        assert f"{tied}: " in result.output and "scored the same" in result.output

    judged = task_dir / "judged.jsonl"
    result = runner.invoke(
        app, [*args, "--scorer", "judge", "--judge", str(task_dir / "system"), "--out", str(judged)]
    )
    assert result.exit_code == 0, result.output
    # The local judge is read in logprob mode: an expected rating, so distinct answers rarely tie.
    pairs = load_dataset(judged, kind="preference")
    assert len(pairs) >= 1 and all(r.chosen[0].content != r.rejected[0].content for r in pairs)
    result = runner.invoke(
        app, [*args, "--scorer", "judge", "--judge", str(task_dir / "system"), "--out", str(judged)]
    )
    assert result.exit_code == 0 and "3 (3 from an earlier run)" in result.output, result.output


def test_cli_bad_input_is_a_clear_error(task_dir: Path) -> None:
    runner = CliRunner()
    system = ["--system", str(task_dir / "system")]
    bad = task_dir / "bad.jsonl"
    bad.write_text('{"input": "ok", "reference": "x"}\n{"input": 3}\n{oops\n')
    out = task_dir / "never.jsonl"
    result = runner.invoke(app, ["data", "pairs", str(bad), *system, "--metric", "f1", "--out", str(out)])
    assert result.exit_code == 1 and not out.exists()
    assert f"{bad}:2: input:" in result.output and f"{bad}:3: (record):" in result.output
    # --skip-invalid goes on with the good records, and says what it left out.
    args = ["--metric", "f1", "--out", str(out), "--skip-invalid", "--max-new-tokens", "4"]
    result = runner.invoke(app, ["data", "pairs", str(bad), *system, *args])
    assert result.exit_code == 0, result.output
    assert "2 invalid record(s)" in result.output and len(read(task_dir / "never.scores.jsonl")) == 1
    out.unlink(missing_ok=True)

    prompts = task_dir / "prompts.jsonl"
    prompts.write_text('{"input": "hello"}\n')
    for extra, words in (
        (["--metric", "f1"], "none of the 1 prompt"),
        ([], "needs a metric"),
        (["--scorer", "judge"], "needs a judge"),
        (["--scorer", "reward"], "needs a reward model"),
        (["--scorer", "vibes"], "unknown scorer"),
        (["--scorer", "judge", "--judge", "default", "--temperature", "0"], "greedy"),
    ):
        result = runner.invoke(app, ["data", "pairs", str(prompts), *system, "--out", str(out), *extra])
        assert result.exit_code == 1 and words in result.output, (extra, result.output)
        assert not out.exists()
    result = runner.invoke(app, ["data", "pairs", str(task_dir / "missing.yaml"), *system])
    assert result.exit_code == 1 and "no such file" in result.output
