"""What each training precision costs on this CPU: one LoRA step of the default model in fp32, bf16 autocast, and
bf16 autocast over a bf16 frozen base (what ``training.precision: auto`` picks where bf16 is native).

Each mode runs in its own process on one thread and is timed in CPU seconds, so the figures hold on a busy machine
too. The baseline is fp32 (what a user gets without thinking about precision); ``ratio`` is the bf16 frozen-base
path's speed over fp32's: above 1 on CPUs with native bf16 (AMX, AVX512-BF16), far below 1 where it is emulated.
The last line is one JSON object, with the CPU it ran on.

    python benchmarks/precision_cost.py            # rows of 600 tokens, 2 timed steps per mode
    python benchmarks/precision_cost.py --quick    # rows of 300 tokens, 1 timed step (about 2 minutes on AVX2)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from typing import Any

from tailorlm.core.cpu import machine

MODES = ("fp32", "bf16-autocast", "bf16-frozen")


def run_mode(mode: str, seq: int, steps: int) -> dict[str, Any]:
    import peft
    import torch
    from transformers import AutoModelForCausalLM

    from tailorlm.models.default import ensure_default_model
    from tailorlm.train.sft.answer_loss import answer_loss

    torch.manual_seed(0)
    dtype = torch.bfloat16 if mode == "bf16-frozen" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(ensure_default_model()), dtype=dtype)
    lora = peft.LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, lora).train()

    def cpu_s() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def step() -> None:
        ids = torch.randint(0, model.config.vocab_size, (1, seq))
        labels = torch.full_like(ids, -100)
        labels[:, -12:] = ids[:, -12:]  # a 12-token answer at the end, as in SFT rows
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode != "fp32"):
            loss = answer_loss(model.get_base_model(), {"input_ids": ids, "labels": labels})
        loss.backward()

    step()  # warm-up: first-call allocations and kernel selection
    start = cpu_s()
    for _ in range(steps):
        step()
    seconds = (cpu_s() - start) / steps
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "cpu_s_per_step": round(seconds, 2),
        "tokens_per_cpu_s": round(seq / seconds, 1),
        "peak_mb": round(peak_mb),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="300-token rows, one timed step per mode.")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    seq, steps = (300, 1) if args.quick else (600, 2)
    if args.mode:  # child process: one mode, its figures as JSON on the last line
        print(json.dumps(run_mode(args.mode, seq, steps)))
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    results: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        cmd = [sys.executable, __file__, "--mode", mode, *(["--quick"] if args.quick else [])]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"{mode} failed:\n{done.stderr[-3000:]}")
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
        r = results[mode]
        print(f"{mode:14s} {r['tokens_per_cpu_s']:7.1f} tokens/CPU-s  peak {r['peak_mb']:6d} MB", flush=True)
    fp32, bf16 = results["fp32"], results["bf16-frozen"]
    print(json.dumps({
        "machine": machine(), "tokens_per_row": seq, **{m.replace("-", "_"): r for m, r in results.items()},
        "ratio": round(bf16["tokens_per_cpu_s"] / fp32["tokens_per_cpu_s"], 3),
        "auto_picks": "bf16" if machine()["native_bf16"] else "fp32",
    }))  # fmt: skip


if __name__ == "__main__":
    main()
