"""The `hf` engine: batched generation with transformers, on CPU or GPU.

Batching is the lever that matters on a CPU: one forward pass over 8 rows costs little more than over one,
because a 135M-parameter model is bound by memory traffic, not arithmetic. We sort requests by prompt
length so that rows in a batch need little padding, pad on the left so every row continues from the same
position, and keep the KV cache on (transformers' default).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from tailorlm.models.engines.base import (
    Completion,
    GenerationParams,
    Message,
    Request,
    StreamChunk,
    Usage,
    encode_prompt,
    render_prompt,
    request_constraint,
    tokens_through_eos,
    truncate_at_stop,
)
from tailorlm.models.engines.rows import Row, RowText
from tailorlm.models.load import LoadedModel, load_model
from tailorlm.tools.constrain import Constraint, batch_logits_processor


class HFEngine:
    """Run a transformers causal LM. ``batch_size`` rows are generated together."""

    def __init__(self, model: LoadedModel | str = "default", *, batch_size: int = 8, **load_kwargs: Any) -> None:
        self.loaded = model if isinstance(model, LoadedModel) else load_model(model, **load_kwargs)
        self.model = self.loaded.model
        self.tokenizer = self.loaded.tokenizer
        self.name = self.loaded.name
        self.batch_size = batch_size

    # -- prompts ---------------------------------------------------------------------------------------------
    def render(self, request: str | Sequence[Message] | Request) -> str:
        """The exact text the model sees: chat messages rendered with the model's own chat template."""
        return render_prompt(self.tokenizer, request)

    def _encode(self, text: str) -> list[int]:
        return encode_prompt(self.tokenizer, text)

    # -- batched generation ----------------------------------------------------------------------------------
    def generate(
        self,
        requests: Sequence[str | Sequence[Message] | Request],
        params: GenerationParams | None = None,
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> list[Completion]:
        """Answer every request in input order. ``on_progress(n)`` is called after each batch of ``n``."""
        params = params or GenerationParams()
        if params.seed is not None:
            # Seed once per call, not per batch: re-seeding every batch would make identical rows in different
            # batches (self-consistency samples of one prompt) draw identical chains.
            torch.manual_seed(params.seed)
        encoded = [self._encode(self.render(r)) for r in requests]
        constraints = [request_constraint(r, params) for r in requests]
        # Longest first: similar lengths share a batch (less padding), and an out-of-memory error shows up
        # on the first batch rather than after most of the work is done.
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        results: list[Completion | None] = [None] * len(encoded)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch, batch_constraints = [encoded[i] for i in idx], [constraints[i] for i in idx]
            for i, completion in zip(idx, self._generate_batch(batch, params, batch_constraints), strict=True):
                results[i] = completion
            if on_progress is not None:
                on_progress(len(idx))
        return [c for c in results if c is not None]

    def _generation_kwargs(
        self, params: GenerationParams, prompt_width: int, constraints: Sequence[Constraint | None] = ()
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self._eos_ids(),
        }
        if params.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=None)
        if params.stop:
            # Stop a row as soon as a stop string appears in what it generated; the string is cut off afterwards.
            # Not transformers' ``stop_strings``: it also matches across the prompt's end, so with stop="\n\n" a
            # prompt ending in "\n" stopped after one generated "\n".
            from transformers import StoppingCriteriaList

            stop = _StopInGenerated(self.tokenizer, params.stop, prompt_width)
            kwargs.update(stopping_criteria=StoppingCriteriaList([stop]))
        # Constrained rows: one grammar matcher per row masks that row's logits (tools/constrain.py). transformers
        # runs custom processors before temperature and top-p, so sampling only ever sees allowed tokens.
        processor = batch_logits_processor(constraints, self.tokenizer)
        if processor is not None:
            from transformers import LogitsProcessorList

            kwargs.update(logits_processor=LogitsProcessorList([processor]))
        return kwargs

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids

    def _batch_inputs(self, batch: list[list[int]]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for ids in batch)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in batch], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], dtype=torch.long)
        return {"input_ids": input_ids.to(self.model.device), "attention_mask": mask.to(self.model.device)}

    @torch.inference_mode()
    def _generate_batch(
        self, batch: list[list[int]], params: GenerationParams, constraints: Sequence[Constraint | None] = ()
    ) -> list[Completion]:
        inputs = self._batch_inputs(batch)
        start = time.perf_counter()
        out = self.model.generate(
            **inputs,
            **self._generation_kwargs(params, inputs["input_ids"].shape[1], constraints),
            return_dict_in_generate=True,
            output_scores=params.logprobs,
        )
        latency = time.perf_counter() - start
        new_tokens = out.sequences[:, inputs["input_ids"].shape[1] :]
        token_logprobs = None
        if params.logprobs:
            token_logprobs = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        eos = set(self._eos_ids())
        completions = []
        for row, prompt_ids in enumerate(batch):
            ids = new_tokens[row].tolist()
            n = tokens_through_eos(ids, eos)
            text, stopped = truncate_at_stop(self.tokenizer.decode(ids[:n], skip_special_tokens=True), params.stop)
            hit_eos = n < len(ids) or (n > 0 and ids[n - 1] in eos)
            completions.append(
                Completion(
                    text=text,
                    finish_reason="stop" if (stopped or hit_eos) else "length",
                    usage=Usage(prompt_tokens=len(prompt_ids), completion_tokens=n),
                    logprobs=token_logprobs[row, :n].tolist() if token_logprobs is not None else None,
                    latency_s=latency,
                )
            )
        return completions

    # -- batched streaming (the server) -----------------------------------------------------------------------
    @torch.inference_mode()
    def run_rows(self, rows: Sequence[Row]) -> None:
        """Generate ``rows`` as one left-padded batch, streaming each row's text to its sink (``rows.py``).

        Rows of Systems that share this base model carry their adapter's name; PEFT runs a mixed batch with one
        adapter per row (``adapter_names``), so switching adapters costs nothing between requests.
        """
        params = rows[0].params
        if params.seed is not None:
            torch.manual_seed(params.seed)
        eos = set(self._eos_ids())
        streams = [row.start(self.tokenizer, eos) for row in rows]
        inputs = self._batch_inputs([row.prompt_ids for row in rows])
        # Each row keeps its own constraint (the scheduler groups rows by sampling settings only).
        constraints = [row.params.constraint for row in rows]
        width = inputs["input_ids"].shape[1]
        kwargs = self._generation_kwargs(params.model_copy(update={"stop": []}), width, constraints)
        kwargs["max_new_tokens"] = max(row.params.max_new_tokens for row in rows)
        if any(row.adapter for row in rows):
            kwargs["adapter_names"] = [row.adapter or "__base__" for row in rows]
        from transformers import StoppingCriteriaList

        done = _RowsDone(rows, streams)
        self.model.generate(
            **inputs, **kwargs, streamer=_RowsStreamer(rows, streams), stopping_criteria=StoppingCriteriaList([done])
        )
        for row in rows:
            row.finish()

    # -- streaming -------------------------------------------------------------------------------------------
    def stream(
        self, request: str | Sequence[Message] | Request, params: GenerationParams | None = None
    ) -> Iterator[StreamChunk]:
        """Yield text as it is generated. Text that might be the start of a stop string is held back."""
        from transformers import TextIteratorStreamer

        params = params or GenerationParams()
        prompt_ids = self._encode(self.render(request))
        constraints = [request_constraint(request, params)]
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                with torch.inference_mode():
                    if params.seed is not None:
                        torch.manual_seed(params.seed)
                    result["out"] = self.model.generate(
                        **self._batch_inputs([prompt_ids]),
                        **self._generation_kwargs(params, len(prompt_ids), constraints),
                        streamer=streamer,
                    )
            except BaseException as err:  # surfaced in the caller's thread below
                result["error"] = err
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        holdback = max((len(s) for s in params.stop), default=0)
        text, sent, stopped = "", 0, False
        for piece in streamer:
            text += piece
            cut, stopped = truncate_at_stop(text, params.stop)
            if stopped:
                text = cut
                break
            safe = len(text) - holdback
            if safe > sent:
                yield StreamChunk(text=text[sent:safe])
                sent = safe
        if stopped:
            for _ in streamer:  # drain so the worker thread can finish
                pass
        thread.join()
        if "error" in result:
            raise result["error"]
        if len(text) > sent:
            yield StreamChunk(text=text[sent:])
        ids = result["out"][0, len(prompt_ids) :].tolist()
        eos = set(self._eos_ids())
        n = tokens_through_eos(ids, eos)
        finished = stopped or (n > 0 and ids[n - 1] in eos)
        yield StreamChunk(
            text="",
            finish_reason="stop" if finished else "length",
            usage=Usage(prompt_tokens=len(prompt_ids), completion_tokens=n),
        )


class _RowsStreamer:
    """A transformers streamer that hands each row's new token to that row (the first ``put`` is the prompt)."""

    def __init__(self, rows: Sequence[Row], streams: Sequence[RowText]) -> None:
        self.rows, self.streams, self.prompt_seen = rows, streams, False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for row, text, token in zip(self.rows, self.streams, value.reshape(-1).tolist(), strict=True):
            if not text.done and not row.cancelled.is_set():
                row.emit(text.push(int(token)))
                if text.done:
                    row.finish()

    def end(self) -> None:
        pass


class _RowsDone:
    """A stopping criterion: a row is finished when its text says so (end token, stop string, its own budget) or
    its client went away."""

    def __init__(self, rows: Sequence[Row], streams: Sequence[RowText]) -> None:
        self.rows, self.streams = rows, streams

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        done = [text.done or row.cancelled.is_set() for row, text in zip(self.rows, self.streams, strict=True)]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class _StopInGenerated:
    """A transformers stopping criterion: True for the rows whose generated text contains a stop string."""

    def __init__(self, tokenizer: Any, stop: Sequence[str], prompt_width: int) -> None:
        self.tokenizer = tokenizer
        self.stop = list(stop)
        self.prompt_width = prompt_width
        # Enough trailing tokens to hold the longest stop string plus a token that may straddle its start.
        self.window = max(len(x) for x in self.stop) + 8

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        generated = input_ids[:, self.prompt_width :].tolist()
        done = [
            truncate_at_stop(self.tokenizer.decode(row[-self.window :], skip_special_tokens=True), self.stop)[1]
            for row in generated
        ]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
