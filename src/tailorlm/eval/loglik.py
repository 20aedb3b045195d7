"""Log-likelihood scoring of a causal LM: continuation log-probabilities, multiple choice, perplexity.

These are the scoring primitives of EleutherAI's lm-evaluation-harness (``HFLM.loglikelihood`` and
``loglikelihood_rolling``, and the ``acc`` / ``acc_norm`` metrics of multiple-choice tasks), rewritten as small
functions over any loaded Hugging Face causal LM so that they need no harness, no generation and no GPU.

All three functions share one core, ``_score_rows``: a row is a token sequence whose last ``n`` tokens are
targets. The model reads ``tokens[:-1]`` and the log-softmax at each of the last ``n`` input positions gives the
log-probability of the next token. Rows are right-padded inside our own batches (an attention mask hides the
padding, and position ids stay ``0..len-1`` for the real tokens), so padding never changes a score.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, TypedDict

import torch

from tailorlm.errors import DataError

# Beyond this the config's max positions are usually a sentinel (tokenizers report 1e30), not a real limit.
_FALLBACK_MAX_LENGTH = 2048


class LogProb(NamedTuple):
    """log P(continuation | context): the sum over its tokens, how many tokens, and whether greedy decoding
    would have produced exactly these tokens (lm-evaluation-harness returns the same triple minus the count)."""

    sum_logprob: float
    n_tokens: int
    is_greedy: bool


class MultipleChoiceQuestion(TypedDict):
    context: str
    choices: list[str]
    answer: int


# --------------------------------------------------------------------------------------------------- helpers


def model_max_length(model: Any, tokenizer: Any) -> int:
    """The longest sequence the model takes, found the way lm-evaluation-harness's ``HFLM.max_length`` does:
    config attributes first, then the tokenizer (unless it holds the "no limit" sentinel), else 2048."""
    config = getattr(model, "config", None)
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        return tok_max
    return _FALLBACK_MAX_LENGTH


def _prefix_token_id(tokenizer: Any) -> int:
    # lm-evaluation-harness conditions an empty context (and the first token of a rolling window) on the
    # end-of-text token; a BOS token is the same idea for tokenizers that have one and no EOS.
    for tid in (tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.pad_token_id):
        if tid is not None:
            return int(tid)
    raise DataError("tokenizer has no eos, bos or pad token to condition an empty context on")


def _encode(tokenizer: Any, text: str) -> list[int]:
    # No special tokens: lm-evaluation-harness encodes causal-LM requests with add_special_tokens=False, so that
    # context and context+continuation tokenize consistently and no BOS lands in the middle of a sequence.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation tokens, split at the boundary the way lm-evaluation-harness's ``_encode_pair`` does.

    Trailing whitespace moves from the context to the continuation (``"Answer: "`` + ``"B"`` is scored as
    ``"Answer:"`` + ``" B"``), because BPE tokenizers attach a space to the following word. The whole string is
    encoded once and the continuation is what follows the context's own encoding, so a token that merges across
    the boundary is counted in the continuation rather than tokenized in an unnatural split.
    """
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    if not context:
        return [_prefix_token_id(tokenizer)], _encode(tokenizer, continuation)
    whole = _encode(tokenizer, context + continuation)
    context_enc = _encode(tokenizer, context)
    return context_enc, whole[len(context_enc) :]


def _supports_logits_to_keep(model: Any) -> bool:
    # Most transformers causal LMs can skip the vocabulary projection for positions we do not score; that
    # projection is ~20% of a 135M model's FLOPs and its (batch, seq, vocab) output dominates memory.
    for candidate in (model, getattr(model, "get_base_model", lambda: None)()):
        if candidate is not None and "logits_to_keep" in inspect.signature(candidate.forward).parameters:
            return True
    return False


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


class _RowScore(NamedTuple):
    sum_logprob: float
    n_tokens: int
    is_greedy: bool
    token_logprobs: list[float]


def _score_rows(
    model: Any, rows: Sequence[tuple[Sequence[int], int]], *, pad_id: int, batch_size: int
) -> list[_RowScore]:
    """Score the last ``n`` tokens of each ``(tokens, n)`` row; returns one ``_RowScore`` per row, in order.

    Rows with identical model input (``tokens[:-1]``) run once: a multiple-choice item whose choices are single
    tokens (" yes" / " no", " A".." D") then costs one forward pass, like lm-evaluation-harness's logits cache.
    Inputs run longest first so that each batch holds similar lengths and little padding.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for tokens, n in rows:
        if not 1 <= n < len(tokens):
            raise ValueError(f"a row of {len(tokens)} tokens cannot score {n} targets (needs 1 <= n < len)")

    # Unique model inputs and, for each, the rows that read it.
    inputs: dict[tuple[int, ...], list[int]] = {}
    for i, (tokens, _) in enumerate(rows):
        inputs.setdefault(tuple(tokens[:-1]), []).append(i)
    order = sorted(inputs, key=len, reverse=True)

    device = _device(model)
    use_keep = _supports_logits_to_keep(model)
    results: list[_RowScore | None] = [None] * len(rows)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            width = len(batch[0])  # sorted longest first
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for b, inp in enumerate(batch):
                ids[b, : len(inp)] = torch.tensor(inp, dtype=torch.long)
                mask[b, : len(inp)] = 1
            # The earliest position any row in the batch scores; logits before it are never read.
            first = min(len(inp) - rows[i][1] for inp in batch for i in inputs[inp])
            kwargs: dict[str, Any] = {"attention_mask": mask.to(device), "use_cache": False}
            if use_keep:
                kwargs["logits_to_keep"] = width - first
            logits = model(input_ids=ids.to(device), **kwargs).logits  # (B, T or width - first, V)
            offset = width - logits.shape[1]  # column c of `logits` is input position c + offset
            for b, inp in enumerate(batch):
                for i in inputs[inp]:
                    tokens, n = rows[i]
                    lo = len(inp) - n - offset
                    # float32 log-softmax: bf16/fp16 logits lose the small differences between choices.
                    logprobs = torch.log_softmax(logits[b, lo : lo + n].float(), dim=-1)  # (n, V)
                    target = torch.tensor(tokens[-n:], dtype=torch.long, device=logprobs.device)
                    picked = logprobs.gather(1, target[:, None]).squeeze(1)  # (n,)
                    greedy = bool((logprobs.argmax(dim=-1) == target).all())
                    results[i] = _RowScore(float(picked.sum()), n, greedy, picked.tolist())
    return [r for r in results if r is not None]


# ------------------------------------------------------------------------------------------------ public API


def sequence_logprobs(
    model: Any,
    tokenizer: Any,
    contexts: Sequence[str],
    continuations: Sequence[str],
    batch_size: int = 16,
    *,
    max_length: int | None = None,
) -> list[LogProb]:
    """log P(continuation | context) for each pair, as lm-evaluation-harness's ``loglikelihood`` request.

    Only continuation tokens are scored (see ``encode_pair`` for the boundary). A sequence longer than the model's
    maximum length loses tokens from the left of its context, as in the harness; a continuation that alone
    exceeds it is an error. ``is_greedy`` is True when every continuation token is the argmax.
    """
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations")
    limit = max_length or model_max_length(model, tokenizer)
    rows: list[tuple[list[int], int]] = []
    for k, (context, continuation) in enumerate(zip(contexts, continuations, strict=True)):
        context_enc, cont_enc = encode_pair(tokenizer, context, continuation)
        if not cont_enc:
            raise DataError(f"request {k}: the continuation {continuation!r} encodes to no tokens")
        if len(cont_enc) > limit:
            raise DataError(
                f"request {k}: the continuation has {len(cont_enc)} tokens, more than the model's {limit}",
                hint="score long texts with mean_nll, which slides a window over them",
            )
        # The model reads at most `limit` tokens, so a row holds at most limit + 1 (the last is only a target).
        rows.append(((context_enc + cont_enc)[-(limit + 1) :], len(cont_enc)))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else _prefix_token_id(tokenizer)
    return [
        LogProb(r.sum_logprob, r.n_tokens, r.is_greedy)
        for r in _score_rows(model, rows, pad_id=pad_id, batch_size=batch_size)
    ]


def multiple_choice(
    model: Any,
    tokenizer: Any,
    questions: Sequence[MultipleChoiceQuestion],
    normalize: Literal["acc", "acc_norm"] = "acc_norm",
    *,
    batch_size: int = 16,
    delimiter: str = " ",
) -> dict[str, Any]:
    """Answer multiple-choice questions by the likelihood of each choice, as lm-evaluation-harness does.

    Each choice is scored as the continuation ``delimiter + choice`` of the question's context (the harness's
    ``target_delimiter``). ``acc`` picks the choice with the highest summed log-probability; ``acc_norm`` divides
    each by the continuation's length in characters first, which removes the bias towards short answers
    (the harness's ``acc_norm``; ties go to the first choice, as with ``np.argmax``). Both accuracies are always
    reported; ``normalize`` says which one fills ``score`` and each item's ``pred``.
    """
    if normalize not in ("acc", "acc_norm"):
        raise ValueError(f"normalize must be 'acc' or 'acc_norm', got {normalize!r}")
    contexts: list[str] = []
    continuations: list[str] = []
    for k, q in enumerate(questions):
        choices = q["choices"]
        if len(choices) < 2 or not 0 <= q["answer"] < len(choices):
            raise DataError(f"question {k}: needs >= 2 choices and 0 <= answer < {len(choices)}, got {q['answer']}")
        for choice in choices:
            contexts.append(q["context"])
            continuations.append(delimiter + choice)
    scores = sequence_logprobs(model, tokenizer, contexts, continuations, batch_size)

    per_item: list[dict[str, Any]] = []
    pos = 0
    for q in questions:
        n = len(q["choices"])
        lls = [s.sum_logprob for s in scores[pos : pos + n]]
        lens = [len(c) for c in continuations[pos : pos + n]]
        pos += n
        pred_raw = _argmax(lls)
        pred_norm = _argmax([ll / length for ll, length in zip(lls, lens, strict=True)])
        per_item.append(
            {
                "pred": pred_norm if normalize == "acc_norm" else pred_raw,
                "pred_raw": pred_raw,
                "pred_norm": pred_norm,
                "answer": q["answer"],
                "correct": (pred_norm if normalize == "acc_norm" else pred_raw) == q["answer"],
                "logprobs": lls,
            }
        )
    n_items = len(per_item)
    accuracy = sum(p["pred_raw"] == p["answer"] for p in per_item) / n_items if n_items else float("nan")
    accuracy_norm = sum(p["pred_norm"] == p["answer"] for p in per_item) / n_items if n_items else float("nan")
    return {
        "score": accuracy_norm if normalize == "acc_norm" else accuracy,
        "accuracy": accuracy,
        "accuracy_norm": accuracy_norm,
        "normalize": normalize,
        "n": n_items,
        "per_item": per_item,
    }


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))  # first index wins ties


def mean_nll(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int = 8,
    *,
    max_length: int | None = 1024,
    stride: int | None = None,
) -> dict[str, float | int]:
    """Token-level mean negative log-likelihood and perplexity ``exp(mean NLL)`` over ``texts``.

    Every token of every text is scored once. The first is conditioned on the end-of-text token (as in
    lm-evaluation-harness's ``loglikelihood_rolling``). A text longer than ``max_length`` is read through a sliding
    window (the method of the Hugging Face "Perplexity of fixed-length models" guide): windows start every
    ``stride`` tokens, and each scores only the tokens that no earlier window scored, so that they see up to
    ``max_length - stride`` tokens of context. ``stride`` defaults to half the window; ``stride == max_length``
    gives disjoint windows (faster, higher perplexity). All tokens count equally, so long texts weigh more.
    """
    window = min(max_length or model_max_length(model, tokenizer), model_max_length(model, tokenizer))
    if window < 2:
        raise ValueError(f"max_length must be >= 2, got {window}")
    step = stride or max(1, window // 2)
    if not 1 <= step <= window:
        raise ValueError(f"stride must be in [1, max_length={window}], got {step}")
    prefix = _prefix_token_id(tokenizer)

    rows: list[tuple[list[int], int]] = []
    for text in texts:
        ids = [prefix, *_encode(tokenizer, text)]
        prev_end = 0
        # A row is a window of ids[begin:end + 1]: the model reads ids[begin:end] and predicts ids[begin+1:end+1];
        # the tokens after prev_end are the new ones. The first window reads the prefix token, so ids[1] is scored.
        for begin in range(0, len(ids) - 1, step):
            end = min(begin + window, len(ids) - 1)
            rows.append((ids[begin : end + 1], end - prev_end))
            prev_end = end
            if end == len(ids) - 1:
                break
    if not rows:
        return {"nll": float("nan"), "perplexity": float("nan"), "tokens": 0}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else prefix
    scored = _score_rows(model, rows, pad_id=pad_id, batch_size=batch_size)
    tokens = sum(r.n_tokens for r in scored)
    nll = -sum(r.sum_logprob for r in scored) / tokens
    return {"nll": nll, "perplexity": math.exp(nll), "tokens": tokens}
