"""The rewards of `tailor train rl` on hand-made completions, the samples report, and the recipe's validation."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from tailorlm.core.config import load_config
from tailorlm.core.system import AnswerExtraction, PromptSpec
from tailorlm.errors import ConfigError, DataError
from tailorlm.train.align.rl import (
    MetricReward,
    PythonReward,
    RewardModelReward,
    SampleRecorder,
    completion_text,
    curves_png,
    rl_curves,
    samples_markdown,
)
from tailorlm.train.align.rl_config import RlRecipe

REPO = Path(__file__).resolve().parents[3]
PROMPT = [{"role": "user", "content": "Capital of France?"}]


def said(*texts: str) -> list[list[dict[str, str]]]:
    """Conversational completions, as TRL passes them to a reward function."""
    return [[{"role": "assistant", "content": t}] for t in texts]


# --- verifiable rewards -----------------------------------------------------------------------------------------


def test_metric_reward_scores_f1_against_the_references() -> None:
    reward = MetricReward("f1")
    scores = reward([PROMPT] * 3, said("Paris", "Paris is nice", "Rome"), references=[["Paris"]] * 3)
    # "paris is nice": precision 1/3, recall 1 → F1 = 2·(1/3)·1 / (1/3 + 1) = 0.5.
    assert scores == pytest.approx([1.0, 0.5, 0.0])
    assert reward.__name__ == "metric_f1"


def test_metric_reward_takes_the_best_reference_and_cuts_at_stop_strings() -> None:
    reward = MetricReward("exact_match", stop=["\n"])
    scores = reward([PROMPT] * 2, said("the Paris\nand more text", "Lyon"), references=[["Rome", "Paris"]] * 2)
    assert scores == [1.0, 0.0]  # SQuAD normalization drops "the"; the second line is never scored


def test_metric_reward_reads_labels_as_the_eval_harness_does() -> None:
    reward = MetricReward("accuracy")
    refs = [["positive"], ["positive"], ["negative"]]
    assert reward([PROMPT] * 3, said("Positive.", "negative", " negative "), references=refs) == [1.0, 0.0, 1.0]


def test_metric_reward_applies_the_prompt_programs_answer_extraction() -> None:
    prompt = PromptSpec(answer=AnswerExtraction(method="last_number"))
    reward = MetricReward("exact_match", prompt)
    scores = reward([PROMPT] * 2, said("3 + 4 makes 7", "it is 8"), references=[["7"], ["7"]])
    assert scores == [1.0, 0.0]


def test_a_prompt_without_a_reference_is_unscored_not_zero() -> None:
    scores = MetricReward("f1")([PROMPT] * 2, said("Paris", "Paris"), references=[["Paris"], []])
    assert scores == [1.0, None]  # TRL leaves None out of the group's baseline


def test_plain_text_completions_are_read_too() -> None:
    assert completion_text("just text") == "just text"
    assert completion_text([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]) == "ab"
    assert MetricReward("f1")(["Capital?"], ["Paris"], references=[["Paris"]]) == [1.0]


# --- reward model and Python rewards ------------------------------------------------------------------------------


class FakeScorer:
    """Stands in for RewardModelScorer: the score is the answer's length, and the calls are kept."""

    calls: ClassVar[list[tuple[Any, Any]]] = []

    def __init__(self, path: Any) -> None:
        self.path = path

    def score(self, prompts: Any, completions: Any) -> list[float]:
        FakeScorer.calls.append((prompts, completions))
        return [float(len(c)) for c in completions]


def test_reward_model_reward_scores_prompt_and_answer_text(monkeypatch: pytest.MonkeyPatch) -> None:
    import tailorlm.train.align.scorer as scorer

    monkeypatch.setattr(scorer, "RewardModelScorer", FakeScorer)
    reward = RewardModelReward("runs/x-reward/artifacts", stop=["\n"])
    assert reward([PROMPT, PROMPT], said("abc\nzzzz", "hello")) == [3.0, 5.0]
    prompts, answers = FakeScorer.calls[-1]
    assert prompts == [PROMPT, PROMPT] and answers == ["abc", "hello"]


def test_python_reward_from_a_file_gets_text_and_reference_lists(tmp_path: Path) -> None:
    (tmp_path / "rewards.py").write_text(
        "def match(prompts, completions, references):\n"
        "    assert isinstance(prompts[0], list) and isinstance(completions[0], str)\n"
        "    return [float(c in r) if r else None for c, r in zip(completions, references)]\n"
    )
    reward = PythonReward(f"{tmp_path / 'rewards.py'}:match")
    scores = reward([PROMPT] * 3, said("Paris", "Rome", "Paris"), references=[["Paris"], ["Paris"], []])
    assert scores == [1.0, 0.0, None] and reward.__name__ == "match"


def test_python_reward_from_an_importable_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rl_reward_mod.py").write_text("def length(p, c, r):\n    return [len(x) for x in c]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert PythonReward("rl_reward_mod:length")([PROMPT], said("four")) == [4.0]
    finally:
        sys.modules.pop("rl_reward_mod", None)


def test_python_reward_errors_name_the_problem(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("def one(p, c, r):\n    return [1.0]\n")
    with pytest.raises(DataError, match="returned 1 scores for 2 answers"):
        PythonReward(f"{tmp_path / 'bad.py'}:one")([PROMPT] * 2, said("a", "b"))
    with pytest.raises(ConfigError, match="no function 'missing'"):
        PythonReward(f"{tmp_path / 'bad.py'}:missing")
    with pytest.raises(ConfigError, match="does not exist"):
        PythonReward(f"{tmp_path / 'nowhere.py'}:one")
    with pytest.raises(ConfigError, match="cannot import"):
        PythonReward("no_such_module_here:fn")


# --- what the run keeps -------------------------------------------------------------------------------------------


def test_recorder_keeps_each_steps_rollouts_and_the_report_shows_start_middle_end(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    recorder = SampleRecorder(MetricReward("f1"), path, per_step=2, stop=[])
    for step in range(5):
        state = SimpleNamespace(global_step=step)
        answers = said("Paris", f"words {step}", "unrecorded")
        assert recorder([PROMPT] * 3, answers, references=[["Paris"]] * 3, trainer_state=state) == [1.0, 0.0, 0.0]
    # A resumed run takes step 5 again: its later rollouts replace the first ones in the report.
    recorder(
        [PROMPT] * 2, said("Rome", "Rome"), references=[["Paris"]] * 2, trainer_state=SimpleNamespace(global_step=4)
    )
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 12 and rows[0]["step"] == 1 and rows[0]["prompt"] == "Capital of France?"
    assert rows[0]["reference"] == ["Paris"] and rows[0]["answer"] == "Paris" and rows[0]["reward"] == 1.0

    shown = samples_markdown(path, tmp_path / "samples.md")
    text = (tmp_path / "samples.md").read_text()
    assert shown == [1, 3, 5]
    assert "Step 1 (start) · mean reward 0.500" in text and "Step 3 (middle)" in text
    assert "Step 5 (end) · mean reward 0.000" in text and "| Rome |" in text and "words 4" not in text


def test_curves_read_the_metrics_log_and_plot(tmp_path: Path) -> None:
    rows = [{"step": 0, "prompts": 4}, {"step": 1, "reward": 0.2, "reward_std": 0.1, "kl": 0.0},
            {"step": 1, "reward": 0.25, "kl": 0.0, "completions/mean_length": 7.0},  # a resumed step: the last wins
            {"step": 2, "reward": 0.5, "kl": 0.01, "completions/mean_length": 5.0, "beta": 0.05}]  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 3, "rew')
    series = rl_curves(tmp_path)
    assert series["reward"] == {1: 0.25, 2: 0.5} and series["length"] == {1: 7.0, 2: 5.0}
    assert series["kl"] == {1: 0.0, 2: 0.01} and series["beta"] == {2: 0.05}
    curves_png(series, tmp_path / "c.png", "GRPO")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


# --- the recipe ---------------------------------------------------------------------------------------------------


def _recipe(*overrides: str) -> RlRecipe:
    return load_config(RlRecipe, REPO / "recipes" / "rl-grpo.yaml", list(overrides))


def test_the_shipped_recipe_loads_with_the_papers_defaults() -> None:
    recipe = _recipe()
    assert recipe.algorithm == "grpo" and recipe.group_size == 4 and recipe.reward.kind == "metric"
    assert recipe.beta_value == 0.04 and recipe.learning_rate == 1e-5  # DeepSeekMath's beta; LoRA Without Regret
    assert _recipe("algorithm=rloo").beta_value == 0.05
    assert _recipe("strategy.method=full").learning_rate == 1e-6
    assert _recipe("beta=0").beta_value == 0.0
    ppo = _recipe("algorithm=ppo", "group_size=1")
    assert ppo.beta_value == 0.05 and ppo.ppo.epochs == 4 and ppo.ppo.value_coef == 0.1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["bogus=1"], "bogus"),
        (["training.nope=1"], "nope"),
        (["prompts=p.jsonl"], "exactly one of task"),
        (["task=null"], "exactly one of task"),
        (["strategy.method=qlora"], "not qlora"),
        (["strategy.method=ia3"], "not ia3"),
        (["beta=0", "kl_target=0.1"], "must start above 0"),
        (["reward.kind=reward_model"], "reward.reward_model"),
        (["reward.kind=python"], "reward.function"),
        (["reward.kind=python", "reward.function=nocolon"], "reward.function"),
        (["task=null", "prompts=p.jsonl"], "needs reward.metric"),
        (["group_size=1"], "group_size must be at least 2"),
        (["algorithm=dqn"], "algorithm"),
        (["algorithm=ppo", "ppo.clip=0"], "clip"),
    ],
)
def test_bad_recipes_fail_with_a_clear_error(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _recipe(*overrides)
