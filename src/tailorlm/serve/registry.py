"""The served Systems: loaded once, grouped so that Systems on one base model share its weights where that pays.

Two ways to serve several Systems built on one base model:

- **merged** (the default for small models): each System runs on its own fast engine (CTranslate2 on a CPU) with its
  adapters merged into a converted copy of the weights. Fastest per request; costs one copy of the weights each.
- **shared**: one transformers copy of the base, with every System's LoRA adapter loaded into one PEFT model; each
  row of a batch runs with its own adapter (PEFT's ``adapter_names``), so Systems switch per request for free.

``share_weights: auto`` shares when the merged copies would take more than a quarter of this machine's memory, so a
laptop serving three LoRA variants of a 7B model holds one base, and the 135M default keeps the faster engine.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tailorlm.core.system import System
from tailorlm.errors import ConfigError
from tailorlm.serve.scheduler import Scheduler

log = logging.getLogger("tailorlm.serve")
ShareWeights = Literal["auto", "always", "never"]


@dataclass
class Served:
    """One System as the server runs it."""

    system: System
    scheduler: Scheduler
    engine: Any
    adapter: str | None = None  # its adapter's name inside a shared PEFT model
    rag: Any = None  # RagAnswerer for a System with a retriever
    rag_lock: threading.Lock = field(default_factory=threading.Lock)  # the embedder is not thread-safe
    _constrained: Scheduler | None = None

    @property
    def name(self) -> str:
        return self.system.name

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    @property
    def engine_name(self) -> str:
        return {"CT2Engine": "ct2", "VLLMEngine": "vllm"}.get(type(self.engine).__name__, "hf")

    def constrained_scheduler(self) -> Scheduler:
        """Where a constrained request (a JSON schema, a forced tool call) runs: transformers, which has the logits
        hook CTranslate2 lacks. A System served on ct2 gets a transformers copy on its first such request."""
        if self.engine_name == "hf":
            return self.scheduler
        if self.engine_name != "ct2":
            from tailorlm.serve.state import ApiError

            raise ApiError(400, f"System {self.name!r} runs on {self.engine_name}: constrained decoding needs hf")
        with self.rag_lock:
            if self._constrained is None:
                from tailorlm.models.build import build_engine

                engine = build_engine(self.system.model_copy(update={"engine": "hf"}))
                s = self.scheduler
                self._constrained = Scheduler(
                    engine, name=f"{s.name}:hf", max_batch=s.max_batch, window_ms=s.window_s * 1000,
                    max_queue=s.max_queue, on_batch=s.on_batch,
                )  # fmt: skip
                log.info("loaded a transformers copy of %s for constrained decoding", self.name)
            return self._constrained


def _weights_bytes(model: str) -> int:
    from tailorlm.models.load import resolve_model_path

    try:
        folder = Path(resolve_model_path(model))
    except Exception:
        return 0
    return sum(p.stat().st_size for p in folder.glob("*.safetensors")) or sum(
        p.stat().st_size for p in folder.glob("*.bin")
    )


def _shareable(system: System) -> bool:
    """A System whose answers come from one LoRA adapter (or none) on a local base: PEFT can route it per row."""
    from tailorlm.models.engines.select import _adapter_type

    return (
        system.head is None
        and system.engine in ("auto", "hf")
        and len(system.adapters) <= 1
        and all(_adapter_type(a.path) == "LORA" for a in system.adapters)
    )


def plan_sharing(systems: list[System], share_weights: ShareWeights, memory_bytes: int) -> dict[str, list[System]]:
    """Groups of Systems (by base model) that will share one transformers copy; Systems not listed run alone."""
    groups: dict[str, list[System]] = {}
    for s in systems:
        if _shareable(s):
            groups.setdefault(s.model, []).append(s)
    shared = {}
    for model, members in groups.items():
        if share_weights == "never" or len(members) < 2 or not any(m.adapters for m in members):
            continue
        copies = len({tuple(a.path for a in m.adapters) for m in members})
        if share_weights == "always" or copies * _weights_bytes(model) > memory_bytes // 4:
            shared[model] = members
    return shared


def load_served(
    systems: list[System],
    *,
    share_weights: ShareWeights = "auto",
    max_batch: int = 16,
    window_ms: float = 15.0,
    max_queue: int = 64,
    on_batch: Any = None,
) -> dict[str, Served]:
    """Load every System once; Systems with the same fingerprint reuse one engine."""
    import psutil

    from tailorlm.models.build import build_engine

    names = [s.name for s in systems]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(f"two served Systems are both named {dupes[0]!r}", hint="give each System a unique name")
    shared = plan_sharing(systems, share_weights, psutil.virtual_memory().total)
    served: dict[str, Served] = {}
    engines: dict[str, tuple[Any, Scheduler]] = {}

    def scheduler_for(engine: Any, key: str) -> Scheduler:
        return Scheduler(
            engine, name=key, max_batch=max_batch, window_ms=window_ms, max_queue=max_queue, on_batch=on_batch
        )

    for model, members in shared.items():
        engine, adapters = _shared_engine(model, members, max_batch)
        scheduler = scheduler_for(engine, f"shared:{Path(model).name}")
        for m in members:
            served[m.name] = Served(m, scheduler, engine, adapter=adapters.get(m.name))
        log.info("sharing %s between %s", model, ", ".join(m.name for m in members))
    for s in systems:
        if s.name in served:
            continue
        if s.engine not in ("auto", "hf", "ct2", "vllm"):
            raise ConfigError(
                f"System {s.name!r} names engine {s.engine!r}; tailor serve runs auto, hf, ct2 and vllm Systems",
                hint="an openai-engine System is already served elsewhere: point clients at that endpoint",
            )
        if s.head is not None:
            raise ConfigError(f"System {s.name!r} has a classification head: serve generative Systems")
        key = _engine_key(s)
        if key not in engines:
            engine = build_engine(s, batch_size=max_batch)
            engines[key] = (engine, scheduler_for(engine, s.name))
        engine, scheduler = engines[key]
        served[s.name] = Served(s, scheduler, engine)
    for item in served.values():
        if item.system.retriever is not None:
            from tailorlm.rag.answer import RagAnswerer

            item.rag = RagAnswerer(item.system, tokenizer=item.tokenizer, engine=item.engine)
            # Load the embedder (and its index) now: /ready should mean the first question is answered at speed.
            item.rag.prepare(["warm-up"])
    return served


def _engine_key(system: System) -> str:
    """Systems that differ only in prompt, retriever or decoding defaults run on one engine."""
    return system.model_dump_json(include={"model", "engine", "engine_options", "adapters"})


def _shared_engine(model: str, members: list[System], batch_size: int) -> tuple[Any, dict[str, str]]:
    """One transformers copy of ``model`` with each member's adapter loaded under the member's name."""
    from peft import PeftModel

    from tailorlm.models.engines.hf import HFEngine
    from tailorlm.models.load import load_model
    from tailorlm.models.weights import refuse_pickle_weights

    loaded = load_model(model)
    adapters = {m.name: m.adapters[0].path for m in members if m.adapters}
    first, *rest = adapters.items()
    for _, path in adapters.items():
        refuse_pickle_weights(path, kind="adapter", depth=0)
    peft_model = PeftModel.from_pretrained(loaded.model, first[1], adapter_name=first[0])
    for name, path in rest:
        peft_model.load_adapter(path, adapter_name=name)
    loaded.model = peft_model.eval()
    return HFEngine(loaded, batch_size=batch_size), {name: name for name in adapters}
