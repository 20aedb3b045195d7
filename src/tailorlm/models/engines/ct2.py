"""The `ct2` engine: CTranslate2 on the CPU, the fast local path (docs/models-and-engines.md has the measurements).

On the 2-core AVX2 EPYC, fp32 CTranslate2 answers 16 RAG-length prompts 2.4× faster than the `hf` engine with the
same greedy answers, because its decoder runs at ~65% of the machine's matmul peak where transformers' ``generate``
runs at ~25%. Two facts shape this file:

- **Batch only prompts of (nearly) equal length.** CTranslate2 forwards a batch's prompts at once only up to the
  shortest one; the rest of each longer prompt is fed one token per decoding step. A batch of 16 RAG prompts of
  different lengths is therefore ~3× *slower* than the same prompts one by one. Rows whose lengths differ by at
  most half the answer budget (at least ``LENGTH_SLACK`` tokens) share a batch: short prompts of similar length
  batch well, long ones of mixed length run alone.
- **fp32 by default.** int8 is no faster on a CPU without VNNI and changed 13 of 16 greedy answers of the default
  model; it is opt-in (``engine_options.compute_type: int8``).

Stop strings end a row early through CTranslate2's per-token callback; the text is then cut at the stop string,
as the `hf` engine does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tailorlm.errors import ConfigError
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
from tailorlm.models.engines.rows import Row

# Tokens by which prompts in one batch may always differ: each is one extra decoding step for the whole batch.
LENGTH_SLACK = 8


def length_groups(lengths: Sequence[int], batch_size: int, slack: int = LENGTH_SLACK) -> list[list[int]]:
    """Indices grouped into batches of at most ``batch_size`` whose lengths differ by at most ``slack``.

    Longest first, so the slowest batch (and any out-of-memory error) comes first.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and len(groups[-1]) < batch_size and lengths[groups[-1][0]] - lengths[i] <= slack:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


CONSTRAINT_REFUSED = "constrained decoding needs the hf engine: CTranslate2 has no logits hook"


def refuse_constraints(requests: Sequence[Any], params: Sequence[GenerationParams]) -> None:
    """Raise when any request or setting carries a constraint: ignoring it would return unconstrained text."""
    if any(p.constraint is not None for p in params) or any(
        request_constraint(r, GenerationParams()) for r in requests
    ):
        raise ConfigError(CONSTRAINT_REFUSED, hint="use engine: hf for this System (engine: auto does so by itself)")


def cpu_threads() -> int:
    """Threads for CTranslate2: what torch would use (it honours ``OMP_NUM_THREADS``), at least one."""
    import torch

    return max(torch.get_num_threads(), 1)


class CT2Engine:
    """Generate with a CTranslate2 model folder and the base model's Hugging Face tokenizer."""

    def __init__(
        self,
        ct2_dir: str | Path,
        tokenizer: Any,
        *,
        eos_ids: Sequence[int] = (),
        name: str = "default",
        compute_type: str = "float32",
        batch_size: int = 16,
        threads: int | None = None,
    ) -> None:
        import ctranslate2

        self.generator = ctranslate2.Generator(
            str(ct2_dir),
            device="cpu",
            compute_type=compute_type,
            intra_threads=threads or cpu_threads(),
            inter_threads=1,
        )
        self.tokenizer = tokenizer
        self._eos = [*eos_ids, *([tokenizer.eos_token_id] if tokenizer.eos_token_id not in eos_ids else [])]
        self.name = name
        self.compute_type = compute_type
        self.batch_size = batch_size
        self.settings = {"engine": "ct2", "compute_type": compute_type, "ctranslate2": ctranslate2.__version__}

    # -- prompts ---------------------------------------------------------------------------------------------
    def render(self, request: str | Sequence[Message] | Request) -> str:
        """The exact text the model sees: chat messages rendered with the model's own chat template."""
        return render_prompt(self.tokenizer, request)

    def _encode(self, text: str) -> list[int]:
        return encode_prompt(self.tokenizer, text)

    def eos_ids(self) -> list[int]:
        """The generation config's end tokens plus the tokenizer's, as the hf engine stops on."""
        return [t for t in self._eos if isinstance(t, int)]

    def _options(self, params: GenerationParams) -> dict[str, Any]:
        options: dict[str, Any] = {"max_length": params.max_new_tokens, "end_token": self.eos_ids()}
        if params.greedy:
            options["sampling_topk"] = 1
        else:
            # topk 0 samples from the whole distribution, as transformers does with top_k=None.
            options.update(sampling_topk=0, sampling_topp=params.top_p, sampling_temperature=params.temperature)
        return options

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
        refuse_constraints(requests, [params])
        if params.seed is not None:
            import ctranslate2

            ctranslate2.set_random_seed(params.seed)
        encoded = [self._encode(self.render(r)) for r in requests]
        results: list[Completion | None] = [None] * len(encoded)
        # A forced token costs about one decoding step of the batch, and batching saves decoding steps: rows may
        # differ by up to half the answer budget (short prompts batch; long RAG prompts of mixed length do not).
        slack = max(LENGTH_SLACK, params.max_new_tokens // 2)
        for group in length_groups([len(e) for e in encoded], self.batch_size, slack):
            batch = [encoded[i] for i in group]
            completions = (
                [self._generate_with_logprobs(ids, params) for ids in batch]
                if params.logprobs
                else self._generate_batch(batch, params)
            )
            for i, completion in zip(group, completions, strict=True):
                results[i] = completion
            if on_progress is not None:
                on_progress(len(group))
        return [c for c in results if c is not None]

    def _stop_callback(self, generated: list[list[int]], stop: Sequence[str]) -> Callable[[Any], bool] | None:
        if not stop:
            return None
        longest = max(len(s) for s in stop)

        def on_token(step: Any) -> bool:
            ids = generated[step.batch_id]
            ids.append(step.token_id)
            # Decoding the last few tokens is enough to see a stop string that just completed.
            tail = self.tokenizer.decode(ids[-(longest + 8) :], skip_special_tokens=True)
            return truncate_at_stop(tail, stop)[1]

        return on_token

    def _generate_batch(self, batch: list[list[int]], params: GenerationParams) -> list[Completion]:
        tokens = [self.tokenizer.convert_ids_to_tokens(ids) for ids in batch]
        generated: list[list[int]] = [[] for _ in batch]
        start = time.perf_counter()
        results = self.generator.generate_batch(
            tokens,
            include_prompt_in_result=False,
            return_end_token=True,
            callback=self._stop_callback(generated, params.stop),
            **self._options(params),
        )
        latency = time.perf_counter() - start
        # A row the stop callback ended lacks the token that completed the stop string; the callback saw every
        # token, so its list counts that token too (the text is cut at the stop string either way).
        outputs = [
            seen if len(seen) > len(result.sequences_ids[0]) else result.sequences_ids[0]
            for result, seen in zip(results, generated, strict=True)
        ]
        return [self._completion(out, len(ids), params, latency) for out, ids in zip(outputs, batch, strict=True)]

    def _generate_with_logprobs(self, prompt_ids: list[int], params: GenerationParams) -> Completion:
        start = time.perf_counter()
        ids: list[int] = []
        logprobs: list[float] = []
        for step in self._steps(prompt_ids, params, return_log_prob=True):
            ids.append(step.token_id)
            logprobs.append(float(step.log_prob))
            if truncate_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), params.stop)[1]:
                break
        completion = self._completion(ids, len(prompt_ids), params, time.perf_counter() - start)
        completion.logprobs = logprobs[: completion.usage.completion_tokens]
        return completion

    def _steps(self, prompt_ids: list[int], params: GenerationParams, **extra: Any) -> Iterator[Any]:
        options = self._options(params)
        return self.generator.generate_tokens(self.tokenizer.convert_ids_to_tokens(prompt_ids), **options, **extra)

    def _completion(self, ids: list[int], prompt_tokens: int, params: GenerationParams, latency: float) -> Completion:
        eos = set(self.eos_ids())
        n = tokens_through_eos(ids, eos)
        text, stopped = truncate_at_stop(self.tokenizer.decode(ids[:n], skip_special_tokens=True), params.stop)
        hit_eos = n > 0 and ids[n - 1] in eos
        return Completion(
            text=text,
            finish_reason="stop" if (stopped or hit_eos) else "length",
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=n),
            latency_s=latency,
        )

    # -- batched streaming (the server) -----------------------------------------------------------------------
    def run_rows(self, rows: Sequence[Row]) -> None:
        """Generate ``rows`` as one batch, streaming each row's text to its sink (``rows.py``).

        A row stops on its own end token, stop string, token budget or cancellation: CTranslate2 stops a batch index
        when the per-token callback returns True. The rows share sampling settings (the scheduler groups them).
        """
        params = rows[0].params
        refuse_constraints([], [row.params for row in rows])
        if params.seed is not None:
            import ctranslate2

            ctranslate2.set_random_seed(params.seed)
        eos = set(self.eos_ids())
        streams = [row.start(self.tokenizer, eos) for row in rows]

        def on_token(step: Any) -> bool:
            row, text = rows[step.batch_id], streams[step.batch_id]
            row.emit(text.push(step.token_id))
            if text.done or step.is_last:
                row.finish()
            return text.done or row.cancelled.is_set()

        options = self._options(params)
        options["max_length"] = max(row.params.max_new_tokens for row in rows)
        self.generator.generate_batch(
            [self.tokenizer.convert_ids_to_tokens(row.prompt_ids) for row in rows],
            include_prompt_in_result=False,
            return_end_token=True,
            callback=on_token,
            **options,
        )
        for row in rows:
            row.finish()

    # -- streaming -------------------------------------------------------------------------------------------
    def stream(
        self, request: str | Sequence[Message] | Request, params: GenerationParams | None = None
    ) -> Iterator[StreamChunk]:
        """Yield text as it is generated. Text that might be the start of a stop string is held back."""
        params = params or GenerationParams()
        refuse_constraints([request], [params])
        if params.seed is not None:
            import ctranslate2

            ctranslate2.set_random_seed(params.seed)
        prompt_ids = self._encode(self.render(request))
        eos = set(self.eos_ids())
        holdback = max((len(s) for s in params.stop), default=0)
        ids: list[int] = []
        text, sent, stopped, hit_eos = "", 0, False, False
        for step in self._steps(prompt_ids, params):
            ids.append(step.token_id)
            if step.token_id in eos:
                hit_eos = True
                break
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            cut, stopped = truncate_at_stop(text, params.stop)
            if stopped:
                text = cut
                break
            # A token that ends mid-character decodes to U+FFFD until the next one completes it: wait for it.
            safe = len(text) - holdback - (1 if text.endswith("\ufffd") else 0)
            if safe > sent:
                yield StreamChunk(text=text[sent:safe])
                sent = safe
        if len(text) > sent:
            yield StreamChunk(text=text[sent:])
        yield StreamChunk(
            text="",
            finish_reason="stop" if (stopped or hit_eos) else "length",
            usage=Usage(prompt_tokens=len(prompt_ids), completion_tokens=len(ids)),
        )
