"""GRPO speed on the default model: ``tailor train rl`` against TRL's ``GRPOTrainer`` with its defaults.

Prompts: ``examples/xquad-qa`` training questions, closed book, rendered by the task's template (XQuAD, CC BY-SA
4.0; see that folder's README), the same seeded sample on both sides. Reward: SQuAD F1 of the answer (cut at the
task's stop string) against the reference, the same ``MetricReward`` object on both sides. Both train the same LoRA
adapter (``r=16, lora_alpha=32, target_modules="all-linear"``) with ``GROUP`` answers to each of ``PROMPTS`` prompts
per step, ``COMPLETION`` new tokens at most, for the same number of steps.

- **baseline** (TRL defaults): ``GRPOTrainer`` + that ``LoraConfig`` + ``GRPOConfig(bf16=False, use_cpu=True)`` with
  the batch, group and length above: no reference model (β = 0), activation checkpointing on, TRL's fused LM head
  (which off GPUs projects every position), learning rate 1e-6.
- **ours**: ``tailor train rl recipes/rl-grpo.yaml``: β = 0.04 (a reference pass TRL's default skips), the LM head on
  the answers' positions only (``train/align/cpu_head.py``), no checkpointing, learning rate 1e-5.

Speed is completions per second from the model load to the last step. The mean reward of the last half of the steps
is reported for both (TRL's default learning rate moves a LoRA adapter little in a few steps). Each side runs in its
own process, so its peak resident memory is its own. The last line is one JSON object.

    python benchmarks/rl_throughput.py            # 12 steps per side
    python benchmarks/rl_throughput.py --quick    # 3 steps per side, under 3 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TASK = ROOT / "examples/xquad-qa/task.yaml"
PROMPTS, GROUP, COMPLETION = 2, 4, 32
LORA = {"r": 16, "lora_alpha": 32, "target_modules": "all-linear"}


def recipe(steps: int, out: Path) -> Any:
    from tailorlm.core.config import load_config
    from tailorlm.train.align.rl_config import RlRecipe

    return load_config(
        RlRecipe, ROOT / "recipes/rl-grpo.yaml",
        [f"task={TASK}", "limit=64", f"group_size={GROUP}", f"training.batch_size={PROMPTS}",
         f"max_completion_length={COMPLETION}", f"training.max_steps={steps}", "canaries.enabled=false",
         "strategy.dropout=0", f"name=bench-{out.name}"],
    )  # fmt: skip


def reward_and_rows(steps: int, out: Path) -> tuple[Any, list[dict[str, Any]]]:
    from tailorlm.core.system import System
    from tailorlm.train.align.rl import load_rl_prompts, make_reward

    r = recipe(steps, out)
    rows, task = load_rl_prompts(r, System(model="default"))
    return make_reward(r, task=task, prompt=None), rows


def run_trl(steps: int, out: Path) -> tuple[float, list[float]]:
    import datasets
    import peft
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from tailorlm.models.default import ensure_default_model

    reward, rows = reward_and_rows(steps, out)
    path = str(ensure_default_model())
    start = time.perf_counter()  # both sides count their model load (about a second from the cache)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=GRPOConfig(output_dir=str(out), bf16=False, use_cpu=True, num_generations=GROUP,
                        per_device_train_batch_size=PROMPTS * GROUP, max_completion_length=COMPLETION,
                        max_steps=steps, report_to="none", save_strategy="no", disable_tqdm=True, logging_steps=1),
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft.LoraConfig(**LORA, task_type="CAUSAL_LM"),
    )  # fmt: skip
    trainer.train()
    return time.perf_counter() - start, [r["reward"] for r in trainer.state.log_history if "reward" in r]


def run_ours(steps: int, out: Path) -> tuple[float, list[float]]:
    from tailorlm.core.run import Run
    from tailorlm.models.default import ensure_default_model
    from tailorlm.train.align.rl import build_rl_trainer

    r = recipe(steps, out)
    ensure_default_model()
    with Run.create("bench", root=out / "runs", config=r, kind="rl") as run:
        start = time.perf_counter()
        trainer = build_rl_trainer(r, run)[0]
        trainer.train()
        seconds = time.perf_counter() - start
    return seconds, [row["reward"] for row in trainer.state.log_history if "reward" in row]


def side(name: str, steps: int, out: Path) -> dict[str, Any]:
    seconds, rewards = (run_trl if name == "baseline" else run_ours)(steps, out)
    completions = steps * PROMPTS * GROUP
    late = rewards[len(rewards) // 2 :]
    return {
        "seconds": seconds,
        "completions": completions,
        "completions_per_s": completions / seconds,
        "reward_first": rewards[0] if rewards else None,
        "reward_last_half": sum(late) / len(late) if late else None,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 steps per side")
    parser.add_argument("--side", choices=["baseline", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # one side, in its own process
        print(json.dumps(side(args.side, args.steps, args.out)))
        return
    import torch  # noqa: F401  (machine() reads torch's thread count and CPU capability)

    from tailorlm.core.cpu import machine

    steps = 3 if args.quick else 12
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("baseline", "ours"):
            out = Path(tmp) / name
            out.mkdir()
            cmd = [sys.executable, __file__, "--side", name, "--steps", str(steps), "--out", str(out)]
            env = {**os.environ, "RUST_LOG": "error", "TRL_EXPERIMENTAL_SILENCE": "1"}
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{name}: {results[name]['completions_per_s']:.3f} completions/s, "
                  f"peak RSS {results[name]['peak_rss_mb']:.0f} MB")  # fmt: skip
    summary = {
        "benchmark": "rl_throughput",
        "quick": args.quick,
        "steps": steps,
        "prompts_per_step": PROMPTS,
        "group_size": GROUP,
        "max_completion_length": COMPLETION,
        "machine": machine(),
        "ours": results["ours"],
        "baseline": results["baseline"],
        "ratio": results["ours"]["completions_per_s"] / results["baseline"]["completions_per_s"],
        "memory_ratio": results["ours"]["peak_rss_mb"] / results["baseline"]["peak_rss_mb"],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
