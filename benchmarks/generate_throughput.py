"""Batched generation (tailorlm's `hf` engine) against a plain one-prompt-at-a-time transformers loop.

Both sides run the same model on the same prompts with greedy decoding and the same token budget, each in
its own subprocess so that peak memory is measured separately. The last line printed is one JSON object:
``ours_tokens_per_s``, ``baseline_tokens_per_s``, ``ratio`` (ours / baseline) and the peak RSS of each.

    python benchmarks/generate_throughput.py --quick        # under 3 minutes on 2 CPU cores
    python benchmarks/generate_throughput.py --model default --prompts 64 --max-new-tokens 64
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from tailorlm.core.cpu import machine

# Questions in the style of the eval sets we care about (short factual QA); built in so that the benchmark
# needs nothing beyond the package.
QUESTIONS = [
    "What is the capital of France?",
    "Who wrote the play Romeo and Juliet?",
    "What is the boiling point of water in Celsius?",
    "Name the largest planet in the solar system.",
    "What gas do plants absorb from the air?",
    "How many continents are there on Earth?",
    "What is the chemical symbol for gold?",
    "Which ocean is the largest?",
    "What language is spoken in Brazil?",
    "Who painted the Mona Lisa?",
    "What is the square root of 81?",
    "Which organ pumps blood through the body?",
    "What is the freezing point of water in Fahrenheit?",
    "In which year did the Second World War end?",
    "What is the tallest mountain in the world?",
    "What do bees make?",
]


def _prompts(n: int) -> list[str]:
    return [
        QUESTIONS[i % len(QUESTIONS)] + ("" if i < len(QUESTIONS) else f" (variant {i // len(QUESTIONS)})")
        for i in range(n)
    ]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_ours(model: str, prompts: list[str], max_new_tokens: int, batch_size: int) -> dict:
    from tailorlm.models.engines.base import GenerationParams
    from tailorlm.models.engines.hf import HFEngine

    engine = HFEngine(model, batch_size=batch_size)
    engine.generate(prompts[:1], GenerationParams(max_new_tokens=4))  # warm-up: first-call allocations
    start = time.perf_counter()
    outs = engine.generate(prompts, GenerationParams(max_new_tokens=max_new_tokens))
    wall = time.perf_counter() - start
    tokens = sum(o.usage.completion_tokens for o in outs)
    return {"wall_s": wall, "tokens": tokens, "texts": [o.text for o in outs], "peak_rss_mb": _peak_rss_mb()}


def run_baseline(model: str, prompts: list[str], max_new_tokens: int) -> dict:
    """What a user writes first: tokenize one chat, call `generate`, decode, repeat."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tailorlm.models.load import resolve_model_path

    path = resolve_model_path(model)
    tok = AutoTokenizer.from_pretrained(path)
    lm = AutoModelForCausalLM.from_pretrained(path).eval()

    def one(q: str, n: int) -> tuple[str, int]:
        ids = tok.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.inference_mode():
            out = lm.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
        new = out[0, ids["input_ids"].shape[1] :].tolist()
        return tok.decode(new, skip_special_tokens=True), len(new)

    one(prompts[0], 4)  # warm-up, as for ours
    start = time.perf_counter()
    results = [one(q, max_new_tokens) for q in prompts]
    wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "tokens": sum(n for _, n in results),
        "texts": [t for t, _ in results],
        "peak_rss_mb": _peak_rss_mb(),
    }


def _side(args: argparse.Namespace, side: str) -> dict:
    cmd = [sys.executable, __file__, "--side", side, "--model", args.model, "--prompts", str(args.prompts)]
    cmd += ["--max-new-tokens", str(args.max_new_tokens), "--batch-size", str(args.batch_size)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{side} side failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="16 prompts x 32 tokens (under 3 minutes)")
    parser.add_argument("--side", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.max_new_tokens = 16, 32
    prompts = _prompts(args.prompts)

    if args.side == "ours":
        print(json.dumps(run_ours(args.model, prompts, args.max_new_tokens, args.batch_size)))
        return
    if args.side == "baseline":
        print(json.dumps(run_baseline(args.model, prompts, args.max_new_tokens)))
        return

    print(
        f"generating {len(prompts)} answers x up to {args.max_new_tokens} tokens with {args.model!r}", file=sys.stderr
    )
    ours = _side(args, "ours")
    print(f"ours:     {ours['tokens']} tokens in {ours['wall_s']:.1f} s", file=sys.stderr)
    base = _side(args, "baseline")
    print(f"baseline: {base['tokens']} tokens in {base['wall_s']:.1f} s", file=sys.stderr)
    ours_tps = ours["tokens"] / ours["wall_s"]
    base_tps = base["tokens"] / base["wall_s"]
    same = sum(a.strip() == b.strip() for a, b in zip(ours["texts"], base["texts"], strict=True))
    print(
        json.dumps(
            {
                "benchmark": "generate_throughput",
                "machine": machine(),
                "model": args.model,
                "prompts": len(prompts),
                "max_new_tokens": args.max_new_tokens,
                "batch_size": args.batch_size,
                "ours_tokens_per_s": round(ours_tps, 2),
                "baseline_tokens_per_s": round(base_tps, 2),
                "ratio": round(ours_tps / base_tps, 3),
                "ours_peak_rss_mb": round(ours["peak_rss_mb"], 1),
                "baseline_peak_rss_mb": round(base["peak_rss_mb"], 1),
                "identical_answers": f"{same}/{len(prompts)}",
            }
        )
    )


if __name__ == "__main__":
    main()
