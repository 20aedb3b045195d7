"""The constrained-decoding rungs: answers held to a label set, and the tool-use rungs (docs/tools.md).

**constrained-labels** (a classification task): the zero-shot System whose answer must be one of the training
labels, so a model that knows the answer but words it differently ("Positive!") is not scored wrong.

The tool-use rungs are for a task scored on tool calls (``tool_ast``, ``tool_call_valid``).

The zero-shot rung is the prompt-only baseline: the eval runner renders each example's tools with its question.
These two rungs climb from there:

- **tools-constrained**: the same model, with every call forced to name a real tool and validate against its
  schema (llguidance on the hf engine). ``ladder.tools.tool_choice: required`` when every question needs a call;
  ``auto`` lets the model answer in text when no tool fits.
- **tools-lora**: LoRA SFT on the task's training records with ``tools`` and ``tool_calls`` (chat records, e.g.
  from ``tailor data convert-bfcl --to chat``), in the format the model is asked in at inference.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tailorlm.core.system import System
from tailorlm.core.task import Task
from tailorlm.errors import DataError
from tailorlm.ladder.rungs import Built, Lora, Rung, register_rung

if TYPE_CHECKING:
    from tailorlm.ladder.context import LadderContext

TOOL_METRICS = frozenset({"tool_ast", "tool_call_valid"})


def is_tool_task(task: Task) -> bool:
    return bool(TOOL_METRICS & set(task.metrics))


class ToolsConstrained(Rung):
    name = "tools-constrained"
    title = "Constrained tool calls"
    family = "tool use"
    config_keys = ("tools",)
    below = "zero-shot"

    def skip_reason(self, task: Task) -> str | None:
        return None if is_tool_task(task) else "the task is not scored on tool calls (tool_ast)"

    def build(self, ctx: LadderContext, out: Path) -> Built:
        # CTranslate2 has no logits hook: constrained decoding runs on transformers.
        return Built(System(name=self.name, model=ctx.model, engine="hf"))

    def eval_task(self, task: Task) -> Task:
        from tailorlm.tools.constrain import Constraint

        template = Constraint(type="tool_calls", mode=task.ladder.tools.tool_choice)  # each example adds its tools
        return task.model_copy(update={"generation": task.generation.model_copy(update={"constraint": template})})


class ToolsLora(Lora):
    """The lora rung on chat records with tools: the same training and System, other records and token count."""

    name = "tools-lora"
    title = "LoRA on tool calls"
    below = "zero-shot"

    def skip_reason(self, task: Task) -> str | None:
        if not is_tool_task(task):
            return "the task is not scored on tool calls (tool_ast)"
        return super().skip_reason(task)

    def training_records(self, ctx: LadderContext) -> list[dict[str, Any]]:
        if self.name not in ctx.records:
            from tailorlm.data.load import load_dataset
            from tailorlm.ladder.rungs import sample_records

            path = ctx.train_path()
            dataset = load_dataset(path, ctx.task.train.format if ctx.task.train else None)
            if dataset.kind != "chat" or not any(r.tools for r in dataset):
                raise DataError(
                    f"{path}: tools-lora trains on chat records with tools and tool_calls",
                    hint="convert function-calling data with `tailor data convert-bfcl --to chat`",
                )
            records = [r.model_dump(exclude_none=True) for r in dataset]
            ctx.records[self.name] = sample_records(records, ctx.config.sft.max_records, ctx.task.seed)
        return ctx.records[self.name]

    def count_tokens(self, ctx: LadderContext, records: list[dict[str, Any]]) -> int:
        from tailorlm.models.load import load_tokenizer
        from tailorlm.tools.calling import fallback_messages

        tokenizer = load_tokenizer(ctx.model)
        texts = [
            tokenizer.apply_chat_template(fallback_messages(r["messages"], r.get("tools") or []), tokenize=False)
            for r in records
        ]
        return sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])


class ConstrainedLabels(Rung):
    name = "constrained-labels"
    title = "Constrained to the labels"
    family = "prompting"
    uses = frozenset({"train"})
    below = "zero-shot"

    def skip_reason(self, task: Task) -> str | None:
        from tailorlm.ladder.rungs import LABEL_METRICS

        if not LABEL_METRICS & set(task.metrics):
            return "not a classification task: no accuracy/macro_f1/micro_f1 metric"
        return super().skip_reason(task)

    def prepare(self, ctx: LadderContext) -> list[Any]:
        from tailorlm.ladder.rungs import Head

        return Head().labels(ctx)

    def build(self, ctx: LadderContext, out: Path) -> Built:
        from tailorlm.models.engines.base import GenerationParams
        from tailorlm.tools.constrain import Constraint

        labels = self.prepare(ctx)
        generation = GenerationParams(constraint=Constraint(type="choice", choices=labels))
        # The constraint travels with the System (eval applies it; the server too); transformers applies it.
        return Built(System(name=self.name, model=ctx.model, engine="hf", generation=generation))

    def eval_task(self, task: Task) -> Task:
        # A label cut by the token budget is no label: the grammar ends the answer as soon as one is complete, so a
        # larger budget costs nothing.
        budget = max(task.generation.max_new_tokens, 32)
        return task.model_copy(update={"generation": task.generation.model_copy(update={"max_new_tokens": budget})})


for _rung in (ConstrainedLabels(), ToolsConstrained(), ToolsLora()):
    register_rung(_rung)
