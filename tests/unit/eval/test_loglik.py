"""Log-likelihood scoring against hand computations on a tiny random model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from tailorlm.errors import DataError
from tailorlm.eval.loglik import (
    encode_pair,
    mean_nll,
    model_max_length,
    multiple_choice,
    sequence_logprobs,
)

pytestmark = pytest.mark.unit

CONTEXTS = [
    "The capital of France is",
    "Question: what is two plus two? Answer:",
    "A quick brown fox",
    "hello",
    "user assistant system tool: hello, world! The capital of Italy is",
]
CONTINUATIONS = [" Paris.", " four", " jumps over the lazy dog", ", world!", " Rome"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.padding_side = "left"  # as load_model leaves it: scoring must not depend on it
    return model, tokenizer


def _manual_logprob(model: Any, context_ids: list[int], cont_ids: list[int]) -> tuple[float, bool]:
    """log P(cont | context) from one unbatched forward pass and an explicit log-softmax."""
    ids = torch.tensor([context_ids + cont_ids])
    with torch.no_grad():
        logits = model(ids).logits[0]  # (T, V)
    total, greedy = 0.0, True
    for k, tok in enumerate(cont_ids):
        row = logits[len(context_ids) + k - 1]  # the position before the token predicts it
        logp = row - torch.logsumexp(row, dim=-1)
        total += float(logp[tok])
        greedy &= int(row.argmax()) == tok
    return total, greedy


def test_matches_hand_computed_log_softmax(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    (score,) = sequence_logprobs(model, tok, ["The capital of France is"], [" Paris."])
    ctx = tok("The capital of France is", add_special_tokens=False)["input_ids"]
    whole = tok("The capital of France is Paris.", add_special_tokens=False)["input_ids"]
    expected, greedy = _manual_logprob(model, ctx, whole[len(ctx) :])
    assert score.n_tokens == len(whole) - len(ctx)
    assert score.sum_logprob == pytest.approx(expected, abs=1e-4)
    assert score.is_greedy == greedy
    assert score.sum_logprob < 0


def test_trailing_space_moves_to_continuation(tiny: tuple[Any, Any]) -> None:
    _, tok = tiny
    assert encode_pair(tok, "Answer: ", "four") == encode_pair(tok, "Answer:", " four")
    a = sequence_logprobs(tiny[0], tok, ["Answer: "], ["four"])[0]
    b = sequence_logprobs(tiny[0], tok, ["Answer:"], [" four"])[0]
    assert a == b


def test_empty_context_is_conditioned_on_prefix_token(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    (score,) = sequence_logprobs(model, tok, [""], ["hello"])
    cont = tok("hello", add_special_tokens=False)["input_ids"]
    expected, _ = _manual_logprob(model, [tok.eos_token_id], cont)
    assert score.sum_logprob == pytest.approx(expected, abs=1e-4)


def test_batch_size_and_padding_do_not_change_scores(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    one = sequence_logprobs(model, tok, CONTEXTS, CONTINUATIONS, batch_size=1)  # no padding at all
    four = sequence_logprobs(model, tok, CONTEXTS, CONTINUATIONS, batch_size=4)  # padded batches
    assert [s.n_tokens for s in one] == [s.n_tokens for s in four]
    assert [s.is_greedy for s in one] == [s.is_greedy for s in four]
    assert torch.allclose(
        torch.tensor([s.sum_logprob for s in one]), torch.tensor([s.sum_logprob for s in four]), atol=1e-4
    )
    # The shortest item alone equals the same item padded beside the longest one.
    alone = sequence_logprobs(model, tok, [CONTEXTS[3]], [CONTINUATIONS[3]])[0]
    padded = sequence_logprobs(model, tok, [CONTEXTS[4], CONTEXTS[3]], [CONTINUATIONS[4], CONTINUATIONS[3]])[1]
    assert padded.sum_logprob == pytest.approx(alone.sum_logprob, abs=1e-4)


def test_left_truncation_keeps_the_continuation(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    context = " ".join(["The capital of France is Paris."] * 20)
    (score,) = sequence_logprobs(model, tok, [context], [" Rome"], max_length=16)
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    whole = tok(context + " Rome", add_special_tokens=False)["input_ids"]
    cont = whole[len(ctx) :]
    kept = (ctx + cont)[-17:]  # 16 model inputs + the last target
    expected, _ = _manual_logprob(model, kept[: -len(cont)], cont)
    assert score.sum_logprob == pytest.approx(expected, abs=1e-4)
    with pytest.raises(DataError, match="continuation has"):
        sequence_logprobs(model, tok, ["x"], [" jumps over the lazy dog" * 4], max_length=8)


def test_multiple_choice_picks_the_manual_argmax(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    questions = [
        {"context": "The capital of France is", "choices": ["Paris.", "Rome", "a quick brown fox"], "answer": 0},
        {"context": "Question: what is two plus two? Answer:", "choices": ["four", "hello, world!"], "answer": 1},
    ]
    result = multiple_choice(model, tok, questions, normalize="acc")
    for q, item in zip(questions, result["per_item"], strict=True):
        lls = [sequence_logprobs(model, tok, [q["context"]], [" " + c])[0].sum_logprob for c in q["choices"]]
        norm = [ll / len(" " + c) for ll, c in zip(lls, q["choices"], strict=True)]
        assert item["logprobs"] == pytest.approx(lls, abs=1e-4)
        assert item["pred_raw"] == max(range(len(lls)), key=lls.__getitem__)
        assert item["pred_norm"] == max(range(len(norm)), key=norm.__getitem__)
        assert item["pred"] == item["pred_raw"]
    expected_acc = sum(i["pred_raw"] == q["answer"] for i, q in zip(result["per_item"], questions, strict=True)) / 2
    assert result["accuracy"] == result["score"] == expected_acc
    assert multiple_choice(model, tok, questions, normalize="acc_norm")["score"] == result["accuracy_norm"]


def test_the_choice_the_model_prefers_wins(tiny: tuple[Any, Any]) -> None:
    """Make the model's own greedy continuation one of the choices: it must beat a mangled copy of itself."""
    model, tok = tiny
    context = "The capital of France is"
    ids = torch.tensor([tok(context, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    greedy_ids = out[0, ids.shape[1] :].tolist()
    # Choices are scored with a leading delimiter; score raw token strings so the greedy path is exact.
    greedy_text = tok.decode(greedy_ids)
    (score,) = sequence_logprobs(model, tok, [context], [greedy_text])
    if tok(context + greedy_text, add_special_tokens=False)["input_ids"][ids.shape[1] :] == greedy_ids:
        assert score.is_greedy  # the tokenization round-trips, so greedy decoding made exactly these tokens
    worst_token = int(model(ids).logits[0, -1].argmin())
    worse_text = tok.decode([worst_token, *greedy_ids[1:]])
    result = multiple_choice(
        model, tok, [{"context": context, "choices": [worse_text, greedy_text], "answer": 1}], "acc", delimiter=""
    )
    assert result["per_item"][0]["pred"] == 1
    assert result["accuracy"] == 1.0


def test_multiple_choice_rejects_bad_questions(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    with pytest.raises(DataError, match="question 0"):
        multiple_choice(model, tok, [{"context": "x", "choices": ["a", "b"], "answer": 2}])
    with pytest.raises(ValueError, match="normalize"):
        multiple_choice(model, tok, [], normalize="f1")  # type: ignore[arg-type]


def test_perplexity_is_exp_of_mean_nll_and_matches_hand_computation(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    texts = ["The capital of France is Paris.", "A quick brown fox jumps over the lazy dog"]
    result = mean_nll(model, tok, texts, batch_size=2)
    total, count = 0.0, 0
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        logp, _ = _manual_logprob(model, [tok.eos_token_id], ids)
        total, count = total - logp, count + len(ids)
    assert result["tokens"] == count
    assert result["nll"] == pytest.approx(total / count, abs=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(result["nll"]), rel=1e-9)


def test_sliding_window_scores_every_token_once(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    text = "The capital of France is Paris. The capital of Italy is Rome. " * 6
    n = len(tok(text, add_special_tokens=False)["input_ids"])
    full = mean_nll(model, tok, [text], max_length=512)
    for stride in (4, 8, 16):
        windowed = mean_nll(model, tok, [text], max_length=16, stride=stride)
        assert windowed["tokens"] == full["tokens"] == n
        assert math.isfinite(windowed["nll"])
    # A window at least as long as the text sees the same context as no window at all.
    assert mean_nll(model, tok, [text], max_length=n + 1, stride=3)["nll"] == pytest.approx(full["nll"], abs=1e-5)
    # Batching windows together changes nothing.
    a = mean_nll(model, tok, [text, "hello"], max_length=16, stride=8, batch_size=1)
    b = mean_nll(model, tok, [text, "hello"], max_length=16, stride=8, batch_size=5)
    assert a["nll"] == pytest.approx(b["nll"], abs=1e-5)


def test_max_length_comes_from_the_config(tiny: tuple[Any, Any]) -> None:
    model, tok = tiny
    assert model_max_length(model, tok) == 512
