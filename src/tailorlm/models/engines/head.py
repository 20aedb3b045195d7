"""The `head` engine: a System with a classification or regression head answers with a label, not generated text.

The backbone is loaded as ``AutoModelForSequenceClassification`` (for a decoder such as Llama: the last real
token's hidden state → a linear ``score`` layer), PEFT adapters are applied (a SEQ_CLS adapter carries the trained
``score`` weights in ``modules_to_save``), and each request's text is scored in batches:

    text → tokens (cut to head.max_length, left-padded) → logits (B, C) → softmax(logits / T) → label, probabilities

The text is the request's raw prompt or its last user turn, as it was in training: a head System has no prompt
program. The Completion's ``probabilities`` holds the calibrated probability of every label (the eval runner writes
them to predictions.jsonl); a regression head answers with the number and no probabilities.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from tailorlm.core.system import HeadSpec, System
from tailorlm.errors import ConfigError
from tailorlm.models.engines.base import Completion, GenerationParams, Message, Request, StreamChunk, Usage
from tailorlm.models.load import LoadedModel, quiet_loading, resolve_model_path
from tailorlm.models.weights import refuse_pickle_weights, safetensors_kwargs


def head_tokenizer(path: str) -> Any:
    """The tokenizer for training and inference alike: left padding, and EOS as the pad token when there is none.

    Left padding puts every row's last real token at the last position, which is where a decoder classifier reads
    its logits; transformers also finds it from ``pad_token_id``, so both agree.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_head_model(path: str, head: HeadSpec, tokenizer: Any, dtype: torch.dtype = torch.float32) -> Any:
    """``AutoModelForSequenceClassification`` with the head's classes and the tokenizer's pad token in its config.

    A causal-LM folder gets a new, randomly initialised ``score`` layer (trained, or restored from an adapter);
    a folder saved by a full/freeze head run already holds it.
    """
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    labels = head.labels or ["value"]
    kwargs: dict[str, Any] = {
        "num_labels": len(labels),
        "problem_type": "regression" if head.problem == "regression" else "single_label_classification",
        # Decoder models have no pad token of their own; the classifier must know which positions are padding.
        "pad_token_id": tokenizer.pad_token_id,
    }
    if head.labels:
        kwargs["id2label"] = dict(enumerate(head.labels))
        kwargs["label2id"] = {name: i for i, name in enumerate(head.labels)}
    refuse_pickle_weights(path, depth=0)
    kwargs.update(safetensors_kwargs())
    # "Some weights were newly initialized" is expected for the score layer of a causal-LM backbone.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with quiet_loading():
            return AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)


def request_text(request: str | Sequence[Message] | Request) -> str:
    """The text a head scores: a raw prompt, or the content of the last user turn."""
    req = Request.of(request)
    if req.prompt is not None:
        return req.prompt
    user = [m for m in req.messages or [] if m.get("role") == "user"]
    if not user:
        raise ConfigError("a head System scores a user turn; this request has none")
    content = user[-1].get("content")
    if not isinstance(content, str):
        raise ConfigError("a head System scores text; the last user turn has no text content")
    return content


class HeadEngine:
    """Score texts with a System's classification/regression head. ``batch_size`` rows per forward pass."""

    def __init__(self, system: System, *, device: str = "auto", dtype: str = "auto", batch_size: int = 8) -> None:
        from tailorlm.models.device import pick_device, pick_dtype

        if system.head is None:
            raise ConfigError("HeadEngine needs a System with a head")
        if system.prompt is not None:
            raise ConfigError("a head System takes the raw text: remove its prompt program")
        self.head = system.head
        start = time.perf_counter()
        path = resolve_model_path(system.model)
        dev = pick_device(device)
        dt = pick_dtype(dev, dtype)
        self.tokenizer = head_tokenizer(path)
        model = load_head_model(path, self.head, self.tokenizer, dt)
        self.loaded = LoadedModel(
            model=model, tokenizer=self.tokenizer, spec=system.model, path=path, device=dev, dtype=dt
        )
        if system.adapters:
            from tailorlm.models.adapters import apply_adapters

            apply_adapters(self.loaded, system.adapters)
        self.model = self.loaded.model.to(dev).eval()
        self.loaded.load_seconds = time.perf_counter() - start
        self.name = system.name
        self.batch_size = batch_size

    @property
    def labels(self) -> list[str]:
        return self.head.labels or ["value"]

    def logits(self, texts: Sequence[str]) -> torch.Tensor:
        """Raw logits (N, C) in input order (C = 1 for regression), before temperature scaling."""
        out = torch.empty(len(texts), len(self.labels))
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            out[start : start + len(batch)] = self._score(batch)[0]
        return out

    @torch.inference_mode()
    def _score(self, batch: list[str]) -> tuple[torch.Tensor, list[int]]:
        """One forward pass: logits (B, C) and each row's token count after truncation."""
        enc = self.tokenizer(
            batch, truncation=True, max_length=self.head.max_length, padding=True, return_tensors="pt"
        )
        lengths = enc["attention_mask"].sum(dim=1).tolist()
        return self.model(**enc.to(self.model.device)).logits.float().cpu(), lengths

    def _answer(self, logits: torch.Tensor) -> tuple[str, dict[str, float] | None]:
        if self.head.problem == "regression":
            return format(float(logits[0]), ".6g"), None
        probs = torch.softmax(logits / self.head.temperature, dim=-1).tolist()
        best = max(range(len(probs)), key=probs.__getitem__)
        return self.labels[best], dict(zip(self.labels, probs, strict=True))

    def generate(
        self,
        requests: Sequence[str | Sequence[Message] | Request],
        params: GenerationParams | None = None,
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> list[Completion]:
        """Answer every request in input order with its label; ``params`` (decoding settings) do not apply."""
        texts = [request_text(r) for r in requests]
        # Longest first: similar lengths share a batch, so little compute goes to padding.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        results: list[Completion | None] = [None] * len(texts)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            t0 = time.perf_counter()
            logits, lengths = self._score([texts[i] for i in idx])
            latency = time.perf_counter() - t0
            for row, i in enumerate(idx):
                text, probabilities = self._answer(logits[row])
                results[i] = Completion(
                    text=text,
                    finish_reason="stop",
                    usage=Usage(prompt_tokens=lengths[row], completion_tokens=0),
                    probabilities=probabilities,
                    latency_s=latency,
                )
            if on_progress is not None:
                on_progress(len(idx))
        return [c for c in results if c is not None]

    def stream(
        self, request: str | Sequence[Message] | Request, params: GenerationParams | None = None
    ) -> Iterator[StreamChunk]:
        """The label as one chunk (a head has nothing to stream)."""
        (completion,) = self.generate([request], params)
        yield StreamChunk(text=completion.text)
        yield StreamChunk(text="", finish_reason="stop", usage=completion.usage)
