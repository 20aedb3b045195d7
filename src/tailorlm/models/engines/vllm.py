"""The `vllm` engine: the same ``system.yaml`` on GPUs, for users who outgrow the CPU.

vLLM does the continuous batching, the paged KV cache and tensor parallelism. A System's LoRA adapter is served as
a vLLM LoRA module (``LoRARequest``), so the base weights stay shared and the adapter is not merged. Prompts are
rendered and tokenized here, with the model's own chat template, and sent as token ids: vLLM then sees exactly the
tokens the `hf` and `ct2` engines see.

Installed with ``pip install 'tailorlm[vllm]'`` on a machine with a CUDA GPU; the tests are marked ``gpu``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tailorlm.core.system import System
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
)
from tailorlm.models.engines.rows import Row


class VLLMEngine:
    """Generate with ``vllm.LLM``; one optional LoRA adapter per System, applied per request."""

    def __init__(self, system: System) -> None:
        try:
            from vllm import LLM
        except ImportError as err:
            raise ConfigError(
                "engine vllm needs vLLM, which is not installed",
                hint="pip install 'tailorlm[vllm]' on a machine with a CUDA GPU, or use engine: auto",
            ) from err
        from tailorlm.models.load import load_tokenizer, resolve_model_path

        if len(system.adapters) > 1:
            raise ConfigError(
                "engine vllm applies one LoRA adapter per request; this System combines several",
                hint="merge them first (tailor train merge) or use engine: auto",
            )
        opts = system.engine_options
        path = resolve_model_path(system.model)
        self.tokenizer = load_tokenizer(system.model)
        self.name = system.name
        self.llm = LLM(
            model=path,
            tensor_parallel_size=opts.tensor_parallel_size,
            enable_lora=bool(system.adapters),
            max_lora_rank=opts.max_lora_rank,
            seed=0,
        )
        self.lora = None
        if system.adapters:
            from vllm.lora.request import LoRARequest

            adapter = system.adapters[0]
            self.lora = LoRARequest(adapter.name or "adapter", 1, adapter.path)
        self.settings = {"engine": "vllm", "tensor_parallel_size": opts.tensor_parallel_size}

    def render(self, request: str | Sequence[Message] | Request) -> str:
        return render_prompt(self.tokenizer, request)

    def _sampling(self, params: GenerationParams) -> Any:
        from vllm import SamplingParams

        return SamplingParams(
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None,
            seed=params.seed,
            logprobs=1 if params.logprobs else None,
        )

    def generate(
        self,
        requests: Sequence[str | Sequence[Message] | Request],
        params: GenerationParams | None = None,
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> list[Completion]:
        """All requests in one call: vLLM schedules them with continuous batching."""
        params = params or GenerationParams()
        prompts = [{"prompt_token_ids": encode_prompt(self.tokenizer, self.render(r))} for r in requests]
        start = time.perf_counter()
        outputs = self.llm.generate(prompts, self._sampling(params), lora_request=self.lora, use_tqdm=False)
        latency = time.perf_counter() - start
        completions = []
        for prompt, out in zip(prompts, outputs, strict=True):
            best = out.outputs[0]
            logprobs = None
            if params.logprobs and best.logprobs is not None:
                logprobs = [
                    float(step[token].logprob) for step, token in zip(best.logprobs, best.token_ids, strict=True)
                ]
            completions.append(
                Completion(
                    text=best.text,
                    finish_reason="length" if best.finish_reason == "length" else "stop",
                    usage=Usage(prompt_tokens=len(prompt["prompt_token_ids"]), completion_tokens=len(best.token_ids)),
                    logprobs=logprobs,
                    latency_s=latency,
                )
            )
        if on_progress is not None:
            on_progress(len(completions))
        return completions

    def run_rows(self, rows: Sequence[Row]) -> None:
        """The server's batched rows (``rows.py``), all in one ``LLM.generate`` call: vLLM batches them
        continuously on the GPU. The offline ``LLM`` class does not stream, so each row's text arrives whole."""
        eos = {self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set()
        prompts = [{"prompt_token_ids": list(row.prompt_ids)} for row in rows]
        sampling = [self._sampling(row.params.model_copy(update={"stop": []})) for row in rows]
        outputs = self.llm.generate(prompts, sampling, lora_request=self.lora, use_tqdm=False)
        for row, out in zip(rows, outputs, strict=True):
            text = row.start(self.tokenizer, eos)
            for token in out.outputs[0].token_ids:
                row.emit(text.push(int(token)))
                if text.done:
                    break
            row.finish()

    def stream(
        self, request: str | Sequence[Message] | Request, params: GenerationParams | None = None
    ) -> Iterator[StreamChunk]:
        """The offline ``LLM`` class does not stream: the answer comes as one chunk (the server streams via vLLM's
        own OpenAI server instead)."""
        completion = self.generate([request], params)[0]
        yield StreamChunk(text=completion.text)
        yield StreamChunk(text="", finish_reason=completion.finish_reason, usage=completion.usage)
