"""Generation speed: the fast engine ``engine: auto`` picks (ct2 on a CPU) against the `hf` engine, same prompts.

Both sides answer the same prompts greedily with the same token budget, each in its own subprocess so that peak
memory is measured separately:

- **hf**: tailorlm's transformers engine, batch 16 (its setting before the fast engine existed);
- **fast**: ``build_engine(System())``, i.e. what every command now runs (CTranslate2 fp32 here).

Prompts are RAG-shaped by default: three whole XQuAD paragraphs (CC BY-SA 4.0) from
``examples/xquad-qa/docs/paragraphs.jsonl`` and a question, lengths varying as retrieved passages do (~550 tokens on
average). ``--shape rag-even`` cuts every prompt to one length (no padding: the hf engine's best case);
``--shape short`` sends the bare questions.

Figures: completion tokens/s over the batch, prompt-plus-completion tokens/s, the single-request latency of one
RAG prompt (median of 3), peak RSS, and the share of this machine's measured fp32 matmul peak that the engine
reaches (2 FLOPs per weight per token through the decoder; the vocabulary projection counted for generated tokens
only). The last line is one JSON object with ``ratio`` (fast ÷ hf tokens/s at batch 16), ``latency_ratio``
(hf ÷ fast single-request latency), ``agreement`` (identical greedy answers) and the CPU.

    python benchmarks/generate_throughput.py --quick        # 16 RAG prompts x 32 tokens, under 3 minutes
    python benchmarks/generate_throughput.py --shape short --prompts 64
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tailorlm.core.cpu import machine

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples/xquad-qa"
RAG_TOKENS = 550


def prompts(shape: str, n: int) -> list[str]:
    """User turns: a question alone, or three paragraphs and the question (cut to about RAG_TOKENS tokens)."""
    questions = [json.loads(line) for line in (EXAMPLE / "eval.jsonl").read_text(encoding="utf-8").splitlines()]
    lines = (EXAMPLE / "docs/paragraphs.jsonl").read_text(encoding="utf-8").splitlines()
    docs = [json.loads(line)["text"] for line in lines]
    out = []
    for i in range(n):
        q = questions[i % len(questions)]
        question = f"Answer with a short phrase.\n\nQuestion: {q['input']}"
        if shape == "short":
            out.append(question)
            continue
        paragraphs = [docs[(i * 7 + j * 13) % len(docs)] for j in range(3)]
        context = "\n\n".join(f"[{j + 1}] {p.strip()}" for j, p in enumerate(paragraphs))
        if shape == "rag-even":  # every prompt cut to one length: the hf engine's best case (no padding)
            context = " ".join(context.split(" ")[: int(RAG_TOKENS * 0.72)])  # ~1.35 tokens per word here
        out.append(f"Sources:\n{context}\n\n{question}")
    return out


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_side(side: str, texts: list[str], max_new_tokens: int) -> dict:
    from tailorlm.core.system import System
    from tailorlm.models.build import build_engine
    from tailorlm.models.engines.base import GenerationParams

    t0 = time.perf_counter()
    engine = build_engine(System(engine="hf" if side == "hf" else "auto"), batch_size=16)
    load_s = time.perf_counter() - t0
    params = GenerationParams(max_new_tokens=max_new_tokens)
    engine.generate(texts[:1], GenerationParams(max_new_tokens=2))  # warm-up: first-call allocations
    start = time.perf_counter()
    outs = engine.generate(texts, params)
    wall = time.perf_counter() - start
    single = []
    for _ in range(3):
        t = time.perf_counter()
        engine.generate(texts[:1], params)
        single.append(time.perf_counter() - t)
    return {
        "engine": getattr(engine, "settings", {"engine": "hf"}),
        "load_s": load_s,
        "wall_s": wall,
        "prompt_tokens": sum(o.usage.prompt_tokens for o in outs),
        "completion_tokens": sum(o.usage.completion_tokens for o in outs),
        "single_s": statistics.median(single),
        "texts": [o.text for o in outs],
        "peak_rss_mb": _peak_rss_mb(),
    }


def matmul_peak_gflops() -> float:
    """fp32 GFLOP/s of a large square matmul with torch's threads: the ceiling the engines are measured against."""
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    start, reps = time.perf_counter(), 10
    for _ in range(reps):
        a @ b
    return 2 * 2048**3 * reps / (time.perf_counter() - start) / 1e9


def flops_per_token() -> tuple[float, float]:
    """(decoder FLOPs per token, vocabulary projection FLOPs per generated token) of the default model."""
    from transformers import AutoConfig

    from tailorlm.models.default import ensure_default_model

    c = AutoConfig.from_pretrained(ensure_default_model())
    head_dim = c.hidden_size // c.num_attention_heads
    attn = c.hidden_size * head_dim * (2 * c.num_attention_heads + 2 * c.num_key_value_heads)
    mlp = 3 * c.hidden_size * c.intermediate_size
    return 2.0 * c.num_hidden_layers * (attn + mlp), 2.0 * c.hidden_size * c.vocab_size


def _run(args: argparse.Namespace, side: str) -> dict:
    cmd = [sys.executable, __file__, "--side", side, "--shape", args.shape, "--prompts", str(args.prompts)]
    cmd += ["--max-new-tokens", str(args.max_new_tokens)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"{side} side failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=["rag", "rag-even", "short"], default="rag")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="16 prompts x 32 tokens (under 3 minutes)")
    parser.add_argument("--side", choices=["fast", "hf"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.max_new_tokens = 16, 32
    texts = prompts(args.shape, args.prompts)
    if args.side:
        print(json.dumps(run_side(args.side, texts, args.max_new_tokens)))
        return

    peak = matmul_peak_gflops()
    decoder, head = flops_per_token()
    print(
        f"{len(texts)} {args.shape} prompts x {args.max_new_tokens} tokens; fp32 peak {peak:.0f} GFLOP/s",
        file=sys.stderr,
    )
    sides = {side: _run(args, side) for side in ("fast", "hf")}
    summary = {}
    for side, r in sides.items():
        tokens = r["prompt_tokens"] + r["completion_tokens"]
        gflops = (tokens * decoder + r["completion_tokens"] * head) / r["wall_s"] / 1e9
        summary[side] = {
            "engine": r["engine"],
            "tokens_per_s": round(r["completion_tokens"] / r["wall_s"], 2),
            "all_tokens_per_s": round(tokens / r["wall_s"], 1),
            "wall_s": round(r["wall_s"], 2),
            "single_request_s": round(r["single_s"], 3),
            "load_s": round(r["load_s"], 2),
            "peak_rss_mb": round(r["peak_rss_mb"]),
            "share_of_fp32_peak": round(gflops / peak, 3),
        }
        print(
            f"{side:5} {summary[side]['tokens_per_s']:7.2f} tok/s  "
            f"{summary[side]['all_tokens_per_s']:7.1f} all tok/s  "
            f"single {r['single_s']:.2f} s  peak {r['peak_rss_mb']:.0f} MB  {gflops / peak:.0%} of fp32 peak",
            file=sys.stderr,
        )
    fast, hf = sides["fast"], sides["hf"]
    same = sum(a.strip() == b.strip() for a, b in zip(fast["texts"], hf["texts"], strict=True))
    print(
        json.dumps(
            {
                "benchmark": "generate_throughput",
                "machine": machine(),
                "shape": args.shape,
                "prompts": len(texts),
                "prompt_tokens_mean": round(hf["prompt_tokens"] / len(texts), 1),
                "max_new_tokens": args.max_new_tokens,
                "fp32_matmul_peak_gflops": round(peak, 1),
                **{f"{side}": s for side, s in summary.items()},
                "ratio": round(summary["fast"]["tokens_per_s"] / summary["hf"]["tokens_per_s"], 3),
                "latency_ratio": round(hf["single_s"] / fast["single_s"], 3),
                "agreement": round(same / len(texts), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
