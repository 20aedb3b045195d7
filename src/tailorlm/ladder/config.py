"""How the ladder climbs a task: the ``ladder:`` block of ``task.yaml`` (every key optional, unknown keys an error).

    ladder:
      rungs: [zero-shot, few-shot, rag, rag-lora]   # default: every rung the task's data allows
      eval_limit: 60                                 # score rungs on the first N eval examples
      few_shot: {k: 3}
      rag: {top_k: 3}
      sft: {max_records: 160, epochs: 1}

``--quick`` swaps in ``QUICK`` (a smoke run in a few minutes: the same rungs on a sliver of the data).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tailorlm.core.config import StrictModel
from tailorlm.core.system import EngineOptions


class FewShotRungConfig(StrictModel):
    k: int = Field(4, ge=1, description="Demonstrations per question.")
    pool: int = Field(200, ge=1, description="Training records the demonstrations are chosen from.")
    selection: Literal["fixed", "random", "semantic", "mmr"] = Field(
        "semantic", description="How demonstrations are picked per question (docs/few-shot-selection.md)."
    )


class ChainOfThoughtRungConfig(StrictModel):
    trigger: str = Field("Let's think step by step.", description="Reasoning trigger after the question.")
    max_new_tokens: int = Field(256, ge=8, description="Room for the reasoning chain.")


class OptimizeRungConfig(StrictModel):
    budget: int = Field(6, ge=1, description="Candidate prompt programs scored on the dev split.")
    k: int = Field(4, ge=0, description="Demonstrations per candidate.")
    pool_size: int = Field(40, ge=0, description="Training records used as the demonstration pool.")
    dev_size: int = Field(40, ge=1, description="Training records that rank candidates (never the eval set).")


class RagRungConfig(StrictModel):
    top_k: int = Field(3, ge=1, description="Passages retrieved per question.")
    mode: Literal["hybrid", "dense", "lexical"] | None = Field(
        None, description="Which signals rank the passages; default: the index's (tuned, or hybrid)."
    )
    chunk_tokens: int | None = Field(None, ge=16, description="Max tokens per chunk; default: the index's.")
    tune: bool = Field(
        True,
        description="Tune retrieval (chunking, fusion, expansion) on the training questions with references "
        "(`tailor rag tune`), never the eval set; its time counts in the RAG rungs' build time.",
    )
    tune_questions: int = Field(200, ge=10, description="Training questions the tuning uses at most (seeded sample).")


class SftRungConfig(StrictModel):
    method: str = Field("lora", description="Parameter strategy (docs/fine-tuning.md): lora, dora, full, …")
    max_records: int | None = Field(None, ge=1, description="Train on at most N training records (seeded sample).")
    epochs: float = Field(1.0, gt=0, description="Passes over the training records.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    batch_size: int = Field(4, ge=1)
    learning_rate: float | None = Field(None, gt=0, description="None: the method's default.")
    max_length: int = Field(1024, ge=32, description="Rows longer than this many tokens are dropped.")


class HeadRungConfig(StrictModel):
    method: str = Field("lora", description="Parameter strategy of the backbone: lora, dora, ia3, full, freeze.")
    max_records: int | None = Field(None, ge=1, description="Train on at most N training records (seeded sample).")
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(16, ge=1)
    max_length: int = Field(128, ge=4, description="Inputs are cut to this many tokens.")
    learning_rate: float | None = Field(None, gt=0, description="None: the method's default (docs/heads.md).")


class RaftRungConfig(StrictModel):
    distractors: int = Field(2, ge=0, description="Retrieved non-gold passages per training record.")
    p_oracle: float = Field(0.8, ge=0, le=1, description="Share of records that include the gold passage.")


class ToolsRungConfig(StrictModel):
    """The tool-use rungs (ladder/tool_rungs.py), for tasks scored on tool calls (``tool_ast``)."""

    tool_choice: Literal["auto", "required"] = Field(
        "auto",
        description="Constrained rung: required when every question needs a call, auto when some need none.",
    )


class DpoRungConfig(StrictModel):
    """The preference rung (ladder/align_rungs.py), for tasks with ``preference:`` pairs; docs/alignment.md."""

    method: Literal["dpo", "ipo", "hinge", "orpo", "simpo"] = Field("dpo", description="Preference loss.")
    beta: float | None = Field(None, gt=0, description="None: the method's paper default.")
    max_records: int | None = Field(None, ge=1, description="Train on at most N pairs (seeded sample).")
    epochs: float = Field(1.0, gt=0, description="Passes over the pairs.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    batch_size: int = Field(8, ge=1, description="Pairs per optimizer step.")
    learning_rate: float | None = Field(None, gt=0, description="None: the method's default (docs/alignment.md).")
    max_length: int = Field(512, ge=32, description="Prompt + answer tokens; older turns are dropped to fit.")


class RlRungConfig(StrictModel):
    """The online-RL rung (ladder/align_rungs.py), for tasks whose primary metric scores an answer against its
    reference (a verifiable reward); docs/alignment.md."""

    algorithm: Literal["grpo", "rloo", "ppo"] = Field(
        "grpo", description="GRPO (group-normalised), RLOO (leave-one-out) or PPO (a value head)."
    )
    group_size: int = Field(4, ge=2, description="Answers sampled per prompt.")
    beta: float | None = Field(None, ge=0, description="KL coefficient; None: GRPO 0.04, RLOO 0.05.")
    max_records: int | None = Field(
        64,
        ge=1,
        description="Train on at most N prompts (seeded sample): every step generates group_size answers to "
        "batch_size prompts, the slow part on a CPU (about 15 s a step for the default model on two cores).",
    )
    epochs: float = Field(1.0, gt=0, description="Passes over the prompts.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    batch_size: int = Field(2, ge=1, description="Prompts per optimizer step (× group_size answers).")
    learning_rate: float | None = Field(None, gt=0, description="None: LoRA 1e-5 (docs/alignment.md).")
    max_completion_length: int | None = Field(
        None, ge=1, description="New tokens per rollout; None: the task's generation.max_new_tokens."
    )
    max_length: int = Field(512, ge=32, description="Prompt + answer tokens; longer prompts are left out.")


class ProbesConfig(StrictModel):
    """Bias and safety probes run on the recommended System at the end of a ladder (docs/probes.md)."""

    enabled: bool = Field(True, description="Run the probes on the recommended System and report them.")
    limit: int = Field(30, ge=1, description="Probed eval records (fairness) and red-team prompts (harmlessness).")
    max_new_tokens: int = Field(64, ge=1, description="Answer length on the red-team prompts.")


class LadderConfig(StrictModel):
    """What the ladder runs and how big each rung is."""

    rungs: list[str] | None = Field(None, description="Rungs to run, in order; None: every applicable rung.")
    eval_limit: int | None = Field(None, ge=1, description="Score on the first N eval examples (all: None).")
    batch_size: int = Field(8, ge=1, description="Questions per generation batch.")
    canary_limit: int | None = Field(100, ge=1, description="Canary items scored per model (None: all 300).")
    engine: Literal["auto", "hf", "ct2", "openai", "vllm"] = Field(
        "auto", description="Engine that answers for every rung (openai: a served model, e.g. vLLM's endpoint)."
    )
    engine_options: EngineOptions = Field(default_factory=EngineOptions, description="The engine's settings.")
    few_shot: FewShotRungConfig = Field(default_factory=FewShotRungConfig)
    chain_of_thought: ChainOfThoughtRungConfig = Field(default_factory=ChainOfThoughtRungConfig)
    optimize: OptimizeRungConfig = Field(default_factory=OptimizeRungConfig)
    rag: RagRungConfig = Field(default_factory=RagRungConfig)
    sft: SftRungConfig = Field(default_factory=SftRungConfig)
    raft: RaftRungConfig = Field(default_factory=RaftRungConfig)
    head: HeadRungConfig = Field(default_factory=HeadRungConfig)
    tools: ToolsRungConfig = Field(default_factory=ToolsRungConfig)
    dpo: DpoRungConfig = Field(default_factory=DpoRungConfig)
    rl: RlRungConfig = Field(default_factory=RlRungConfig)
    probes: ProbesConfig = Field(default_factory=ProbesConfig)


# A smoke run of the same rungs: enough to see every rung build, score and report, in about three minutes on a
# 2-core CPU with the default model. Its figures are noise; it says so in the report.
QUICK_OVERRIDES: dict[str, object] = {
    "eval_limit": 8,  # one batch: the plan's calibration batch is the whole eval, so nothing is generated twice
    "canary_limit": 10,
    "few_shot": {"k": 2, "pool": 32},
    "optimize": {"budget": 2, "pool_size": 8, "dev_size": 8},
    "rag": {"top_k": 2},
    "raft": {"distractors": 1},
    "sft": {"max_records": 16, "max_steps": 4},
    "head": {"max_records": 64, "max_steps": 4},
    "dpo": {"max_records": 16, "max_steps": 4},
    "rl": {"max_records": 16, "max_steps": 2},
    "probes": {"limit": 4, "max_new_tokens": 16},
}


def quick(config: LadderConfig) -> LadderConfig:
    """``config`` shrunk to a smoke run (``--quick``); the rung list is kept."""
    data = config.model_dump()
    for key, value in QUICK_OVERRIDES.items():
        if isinstance(value, dict):
            data[key] = {**data[key], **value}
        elif key.endswith("_limit") and isinstance(value, int) and data[key] is not None:
            data[key] = min(data[key], value)
        else:
            data[key] = value
    return LadderConfig.model_validate(data)
