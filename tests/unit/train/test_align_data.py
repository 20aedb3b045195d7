"""Preference data and recipes: records → TRL rows, fitting long conversations into max_length (oldest exchange
first), micro-batches, each method's defaults, the pairwise report worked out by hand, and LoRA in the top blocks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tailorlm.core.config import load_config
from tailorlm.data import Dataset
from tailorlm.errors import ConfigError
from tailorlm.train.align.config import METHOD_DEFAULTS, DpoRecipe, RewardRecipe
from tailorlm.train.align.data import fit_rows, to_rows
from tailorlm.train.align.reward import pairwise_report
from tailorlm.train.align.trainer_args import micro_batches
from tailorlm.train.sft.config import Strategy
from tailorlm.train.sft.recipe import top_blocks_targets

pytestmark = pytest.mark.unit


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def tokens(tokenizer: Any, messages: list[dict[str, str]]) -> int:
    """The chat template's token count, computed here rather than through the code under test."""
    ids = tokenizer.apply_chat_template(messages, tokenize=True)
    return len(ids["input_ids"] if hasattr(ids, "keys") else ids)


# --- to_rows ------------------------------------------------------------------------------------------------


def test_text_pairs_become_single_turns() -> None:
    data = Dataset.from_dicts([{"prompt": "2+2?", "chosen": "four", "rejected": "five"}], "preference")
    assert to_rows(data) == [
        {"prompt": [msg("user", "2+2?")], "chosen": [msg("assistant", "four")], "rejected": [msg("assistant", "five")]}
    ]


def test_message_pairs_keep_every_turn_and_role() -> None:
    prompt = [msg("system", "Be brief."), msg("user", "hi"), msg("assistant", "hello"), msg("user", "2+2?")]
    data = Dataset.from_dicts(
        [{"prompt": prompt, "chosen": [msg("assistant", "4")], "rejected": [msg("assistant", "5")]}], "preference"
    )
    (row,) = to_rows(data)
    assert row == {"prompt": prompt, "chosen": [msg("assistant", "4")], "rejected": [msg("assistant", "5")]}


def test_binary_records_keep_their_label() -> None:
    data = Dataset.from_dicts(
        [
            {"prompt": "2+2?", "completion": "four", "label": True},
            {"prompt": [msg("user", "2+3?")], "completion": [msg("assistant", "six")], "label": False},
        ],
        "binary",
    )
    assert to_rows(data) == [
        {"prompt": [msg("user", "2+2?")], "completion": [msg("assistant", "four")], "label": True},
        {"prompt": [msg("user", "2+3?")], "completion": [msg("assistant", "six")], "label": False},
    ]


# --- fit_rows -----------------------------------------------------------------------------------------------

SYSTEM = msg("system", "Be brief.")
THREE_EXCHANGES = [
    SYSTEM,
    msg("user", "first question " * 6),
    msg("assistant", "first answer " * 6),
    msg("user", "second question " * 6),
    msg("assistant", "second answer " * 6),
    msg("user", "third?"),
]


def _pair(prompt: list[dict[str, str]], chosen: str = "yes", rejected: str = "no") -> dict[str, Any]:
    return {"prompt": prompt, "chosen": [msg("assistant", chosen)], "rejected": [msg("assistant", rejected)]}


def _lengths(tokenizer: Any, row: dict[str, Any]) -> tuple[int, int, int]:
    """Tokens of the longest side: whole, without the first exchange, and with only the system + last user turn."""
    answer = max((row["chosen"], row["rejected"]), key=lambda a: tokens(tokenizer, a))
    whole = tokens(tokenizer, [*row["prompt"], *answer])
    one_less = tokens(tokenizer, [SYSTEM, *row["prompt"][3:], *answer])
    last = tokens(tokenizer, [SYSTEM, row["prompt"][-1], *answer])
    assert whole > one_less > last
    return whole, one_less, last


def test_a_row_that_fits_is_kept_whole(tiny_tokenizer: Any) -> None:
    row = _pair(THREE_EXCHANGES)
    whole, _, _ = _lengths(tiny_tokenizer, row)
    kept, stats = fit_rows([row], tiny_tokenizer, whole, "training")
    assert kept == [row]
    assert stats.as_dict() == {"kept": 1, "trimmed": 0, "dropped": 0, "longest": whole}


def test_the_oldest_exchange_goes_first_and_the_system_message_stays(tiny_tokenizer: Any) -> None:
    row = _pair(THREE_EXCHANGES)
    whole, one_less, last = _lengths(tiny_tokenizer, row)

    kept, stats = fit_rows([row], tiny_tokenizer, whole - 1, "training")
    assert kept[0]["prompt"] == [SYSTEM, *THREE_EXCHANGES[3:]]  # the first user turn and its answer are gone
    assert kept[0]["chosen"] == row["chosen"] and kept[0]["rejected"] == row["rejected"]
    assert stats.as_dict() == {"kept": 1, "trimmed": 1, "dropped": 0, "longest": one_less}

    kept, stats = fit_rows([row], tiny_tokenizer, one_less - 1, "training")
    assert kept[0]["prompt"] == [SYSTEM, THREE_EXCHANGES[-1]]
    assert stats.as_dict() == {"kept": 1, "trimmed": 1, "dropped": 0, "longest": last}
    assert row["prompt"] == THREE_EXCHANGES  # the input row is not modified


def test_the_longer_answer_decides_what_fits(tiny_tokenizer: Any) -> None:
    # Short chosen, long rejected: the pair must fit with either side, so the rejected one forces the trim.
    row = _pair(THREE_EXCHANGES, chosen="y", rejected="a much longer rejected answer " * 3)
    whole, one_less, _ = _lengths(tiny_tokenizer, row)
    assert tokens(tiny_tokenizer, [*row["prompt"], *row["chosen"]]) < whole - 1
    kept, stats = fit_rows([row], tiny_tokenizer, whole - 1, "training")
    assert kept[0]["prompt"] == [SYSTEM, *THREE_EXCHANGES[3:]] and stats.longest == one_less


def test_a_record_whose_last_exchange_is_too_long_is_dropped_and_counted(tiny_tokenizer: Any) -> None:
    short = _pair([msg("user", "hi")])
    trimmable = _pair(THREE_EXCHANGES)
    _, _, last = _lengths(tiny_tokenizer, trimmable)
    too_long = _pair([msg("user", "an enormous last question " * 20)])
    assert tokens(tiny_tokenizer, [*too_long["prompt"], *too_long["rejected"]]) > last
    kept, stats = fit_rows([short, too_long, trimmable], tiny_tokenizer, last, "training")
    assert [r["prompt"][-1] for r in kept] == [msg("user", "hi"), THREE_EXCHANGES[-1]]
    assert (stats.kept, stats.trimmed, stats.dropped) == (2, 1, 1)
    short_length = max(tokens(tiny_tokenizer, [*short["prompt"], *short[side]]) for side in ("chosen", "rejected"))
    assert stats.lengths == [short_length, last]


def test_binary_rows_fit_on_their_one_completion(tiny_tokenizer: Any) -> None:
    row = {"prompt": THREE_EXCHANGES, "completion": [msg("assistant", "yes")], "label": False}
    whole = tokens(tiny_tokenizer, [*THREE_EXCHANGES, *row["completion"]])
    kept, stats = fit_rows([row], tiny_tokenizer, whole - 1, "training")
    assert kept == [{**row, "prompt": [SYSTEM, *THREE_EXCHANGES[3:]]}]
    assert kept[0]["label"] is False and (stats.kept, stats.trimmed) == (1, 1)


def test_nothing_fitting_is_a_config_error(tiny_tokenizer: Any) -> None:
    with pytest.raises(ConfigError, match=r"every held-out record is longer than training\.max_length=8") as err:
        fit_rows([_pair(THREE_EXCHANGES), _pair([msg("user", "hi")])], tiny_tokenizer, 8, "held-out")
    assert "max_length" in (err.value.hint or "")


# --- micro-batches ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch", "asked", "expected"),
    [
        (8, None, (4, 2)),  # at most 4 rows per forward pass by default
        (4, None, (4, 1)),
        (3, None, (3, 1)),
        (6, None, (3, 2)),  # 4 does not divide 6: the largest micro-batch below it that does
        (5, None, (1, 5)),
        (8, 2, (2, 4)),  # the recipe's micro-batch when it divides the batch
        (8, 3, (2, 4)),  # else the largest divisor below it
        (4, 8, (4, 1)),  # never more rows than the batch
    ],
)
def test_micro_batches_multiply_to_the_batch(batch: int, asked: int | None, expected: tuple[int, int]) -> None:
    micro, accum = micro_batches(batch, asked)
    assert (micro, accum) == expected and micro * accum == batch


# --- recipes ------------------------------------------------------------------------------------------------


def _reward(*overrides: str) -> RewardRecipe:
    return load_config(RewardRecipe, None, ["data.path=pairs.jsonl", *overrides])


def _dpo(*overrides: str) -> DpoRecipe:
    return load_config(DpoRecipe, None, ["data.path=pairs.jsonl", *overrides])


def test_reward_defaults() -> None:
    r = _reward()
    assert r.strategy.method == "lora" and r.learning_rate == 1e-4
    assert (r.training.epochs, r.training.batch_size, r.training.max_length) == (1.0, 8, 512)
    assert r.eval_fraction == 0.2 and r.center_rewards == 0.01
    assert _reward("strategy.method=dora").learning_rate == 1e-4
    assert _reward("strategy.method=full").learning_rate == 1e-5
    assert _reward("strategy.method=freeze", "strategy.train_top_n_blocks=2").learning_rate == 1e-5
    assert _reward("strategy.method=full", "training.learning_rate=3e-4").learning_rate == 3e-4
    assert _reward("center_rewards=null").center_rewards is None


@pytest.mark.parametrize("method", ["dpo", "ipo", "hinge", "kto", "orpo", "simpo"])
def test_dpo_rates_and_betas_follow_each_method(method: str) -> None:
    beta, full, lora = METHOD_DEFAULTS[method]
    assert lora == pytest.approx(10 * full)  # the usual LoRA/full ratio
    r = _dpo(f"method={method}")
    assert r.beta_value == beta and r.learning_rate == lora
    assert _dpo(f"method={method}", "strategy.method=full").learning_rate == full
    assert _dpo(f"method={method}", "beta=0.3").beta_value == 0.3
    assert _dpo(f"method={method}", "training.learning_rate=1e-3").learning_rate == 1e-3


def test_dpo_defaults_name_the_papers_values() -> None:
    r = _dpo()
    assert (r.method, r.beta_value, r.learning_rate) == ("dpo", 0.1, 5e-6)
    assert (r.training.lr_scheduler, r.training.warmup_ratio, r.training.epochs) == ("cosine", 0.1, 1.0)
    assert r.precompute_ref and r.canaries.enabled
    assert _dpo("method=simpo").beta_value == 2.0 and _dpo("method=simpo").gamma_beta_ratio == 0.5
    assert _dpo("method=orpo").learning_rate == 8e-5


@pytest.mark.parametrize("cls", [RewardRecipe, DpoRecipe])
def test_unknown_keys_are_rejected_with_a_suggestion(cls: type, tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text("data: {path: pairs.jsonl}\ntraining:\n  lerning_rate: 1e-4\n")
    with pytest.raises(ConfigError) as err:
        load_config(cls, path)
    message = str(err.value)
    assert str(path) in message and "training.lerning_rate" in message
    assert "learning_rate" in message.split("did you mean")[1]
    with pytest.raises(ConfigError, match="betta: unknown key; did you mean 'beta'"):
        _dpo("betta=0.2")


@pytest.mark.parametrize("method", ["qlora", "ia3", "prompt_tuning"])
def test_methods_without_a_preference_path_are_refused(method: str) -> None:
    with pytest.raises(
        ConfigError, match=f"a reward model trains with lora, dora, rslora, full or freeze, not {method}"
    ):
        _reward(f"strategy.method={method}")
    with pytest.raises(
        ConfigError, match=f"preference training uses lora, dora, rslora, full or freeze, not {method}"
    ):
        _dpo(f"strategy.method={method}")


def test_shipped_recipes_load(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[3]
    reward = load_config(RewardRecipe, repo / "recipes" / "reward-lora.yaml")
    assert reward.strategy.method == "lora" and reward.learning_rate == 1e-4
    dpo = load_config(DpoRecipe, repo / "recipes" / "dpo-lora.yaml", ["method=kto"])
    assert dpo.learning_rate == 5e-6 and dpo.beta_value == 0.1


# --- the pairwise report ------------------------------------------------------------------------------------


def test_pairwise_report_by_hand() -> None:
    chosen = np.array([1.0, 2.0, 3.0, 0.0])
    rejected = np.array([0.0, 2.0, 4.0, -1.0])  # margins 1, 0 (a tie), -1, 1
    report = pairwise_report(chosen, rejected)
    assert report["pairs"] == 4 and report["chance"] == 0.5
    assert report["accuracy"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)  # a tie counts half
    assert report["ci_low"] <= report["accuracy"] <= report["ci_high"]
    assert 0 <= report["ci_low"] < report["ci_high"] <= 1
    assert report["margin_mean"] == pytest.approx(0.25)
    assert report["margin_quantiles"][50] == pytest.approx(0.5)  # sorted margins -1, 0, 1, 1
    assert report["margin_quantiles"][5] <= report["margin_quantiles"][95]
    rewards = [1, 2, 3, 0, 0, 2, 4, -1]
    assert report["reward_mean"] == pytest.approx(sum(rewards) / 8)
    assert report["reward_std"] == pytest.approx(math.sqrt(sum((r - 11 / 8) ** 2 for r in rewards) / 8))
    assert "reward_length_corr" not in report  # no lengths given


def test_ties_only_is_chance_and_a_clean_sweep_is_one() -> None:
    same = np.array([0.3, -0.2, 1.0])
    tied = pairwise_report(same, same.copy())
    assert tied["accuracy"] == 0.5 and tied["ci_low"] == tied["ci_high"] == 0.5
    sweep = pairwise_report(same + 1, same)
    assert sweep["accuracy"] == 1.0 and sweep["ci_low"] == 1.0


def test_reward_length_correlation_has_the_right_sign() -> None:
    chosen = np.array([3.0, 1.0, 2.0])
    rejected = np.array([0.5, -1.0, 0.0])
    rewards = np.concatenate([chosen, rejected])
    longer_is_better = pairwise_report(chosen, rejected, lengths=10 * rewards + 100)
    assert longer_is_better["reward_length_corr"] == pytest.approx(1.0)
    shorter_is_better = pairwise_report(chosen, rejected, lengths=100 - 10 * rewards)
    assert shorter_is_better["reward_length_corr"] == pytest.approx(-1.0)
    lengths = np.array([40, 5, 30, 8, 2, 6])  # mostly, not exactly, in the rewards' order
    assert 0 < pairwise_report(chosen, rejected, lengths=lengths)["reward_length_corr"] < 1
    flat = pairwise_report(np.zeros(3), np.zeros(3), lengths=lengths)
    assert flat["reward_length_corr"] == 0.0  # constant rewards: no correlation, not NaN


# --- LoRA in the top blocks ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)  # two decoder blocks


LLAMA_LINEAR = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def test_top_blocks_name_the_last_blocks_and_their_linear_layers(tiny_model: Any) -> None:
    one = top_blocks_targets(tiny_model, Strategy(method="lora", train_top_n_blocks=1))
    assert one == {"target_modules": LLAMA_LINEAR, "layers_to_transform": [1]}  # lm_head is outside the blocks
    two = top_blocks_targets(tiny_model, Strategy(method="lora", train_top_n_blocks=2))
    assert two["layers_to_transform"] == [0, 1]
    named = top_blocks_targets(tiny_model, Strategy(method="dora", train_top_n_blocks=1, target_modules=["q_proj"]))
    assert named == {"target_modules": ["q_proj"], "layers_to_transform": [1]}
    assert top_blocks_targets(tiny_model, Strategy(method="lora")) == {"target_modules": "all-linear"}


def test_top_blocks_put_adapters_in_the_last_block_only(tiny_model_dir: Path) -> None:
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from tailorlm.train.sft.recipe import peft_config

    strategy = Strategy(method="lora", train_top_n_blocks=1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = get_peft_model(base, peft_config(strategy, base))
    adapted = {n.split(".lora_")[0] for n, _ in model.named_parameters() if "lora_" in n}
    assert adapted and all(".layers.1." in n for n in adapted), sorted(adapted)
    assert {n.rsplit(".", 1)[-1] for n in adapted} == set(LLAMA_LINEAR)


def test_more_top_blocks_than_the_model_has_is_a_config_error(tiny_model: Any) -> None:
    with pytest.raises(ConfigError, match="train_top_n_blocks=3, the model has 2 blocks"):
        top_blocks_targets(tiny_model, Strategy(method="lora", train_top_n_blocks=3))
