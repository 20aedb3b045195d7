"""Constrained decoding overhead: tool-call generation with and without the grammar, same prompts, one run.

BFCL simple_python questions (``../shared/data/bfcl``, Apache-2.0) are rendered with their tool in the system
message and the block format the call parser reads. The `hf` engine answers them greedily, batch 8, twice:

- **free**: unconstrained;
- **constrained**: each request carries ``Constraint(type="tool_calls", tools=..., mode="required",
  parallel=False)`` (a simple_python question wants one call), i.e. its own grammar: rows of one batch hold
  different grammars.

The sides alternate ``--repeats`` times and each keeps its best run, so a burst of load from other work on the
machine does not land on one side only. Grammars are compiled once before timing (``compile_ms`` is that cost, per
schema, cold); the timed constrained runs pay for the per-step masks and the per-row matcher copies.

**Which tokens/s.** The two sides write answers of different lengths (a call is ~25 tokens, free text runs to the
budget), and end-to-end tokens/s spreads the prompt's prefill over them: a shorter answer alone would look "slower".
So each batch is also run with ``max_new_tokens=1`` (its prefill), and ``tokens_per_s`` is decoding throughput:
rows × decoding steps ÷ (batch time − prefill time), a batch taking as many steps as its longest row. ``ratio`` is
constrained ÷ free decoding tokens/s (target ≥ 0.9); ``ratio_end_to_end`` (completion tokens ÷ wall time) is
reported beside it, and ``mask_share``: the share of the constrained side's wall time spent inside the grammar
processors (feeding matchers, computing and applying masks), the overhead itself, measured directly.

Also: the share of answers that are schema-valid calls (blocks that parse, name the tool, and whose arguments
validate against its normalized parameters) on each side, the compile time, the load average and the CPU. Last
line: JSON.

    python benchmarks/constrained_decoding.py --quick     # 8 questions x 64 tokens, 3 repeats: under 3 minutes
    python benchmarks/constrained_decoding.py             # 16 questions x 64 tokens, 3 repeats
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import jsonschema

from tailorlm.core.cpu import machine
from tailorlm.models.engines.base import GenerationParams, Request
from tailorlm.models.engines.hf import HFEngine
from tailorlm.models.load import load_model
from tailorlm.tools.constrain import MASK_TIME, Constraint, cache_info, compiled_matcher, normalize_schema

ROOT = Path(__file__).resolve().parents[1]
BFCL = ROOT.parent / "shared/data/bfcl/BFCL_v4_simple_python.json"
BLOCK = re.compile(r"<tool_call>\n(.*?)\n</tool_call>", re.DOTALL)
SYSTEM = (
    "You are a function-calling assistant. You have these tools:\n{tools}\n\n"
    "To call a tool, reply with exactly:\n<tool_call>\n"
    '{{"name": "TOOL_NAME", "arguments": {{"ARG": VALUE}}}}\n</tool_call>'
)


def questions(n: int) -> list[dict[str, Any]]:
    """The first ``n`` BFCL simple_python entries: messages with the tool in the system turn, and the tools."""
    rows = [json.loads(line) for line in BFCL.read_text(encoding="utf-8").splitlines()[:n]]
    out = []
    for row in rows:
        tools = [{"type": "function", "function": fn} for fn in row["function"]]
        system = SYSTEM.format(tools="\n".join(json.dumps(t["function"]) for t in tools))
        out.append({"messages": [{"role": "system", "content": system}, *row["question"][0]], "tools": tools})
    return out


def valid_calls(text: str, tools: list[dict[str, Any]]) -> bool:
    """``text`` is nothing but call blocks, each naming one of ``tools`` with arguments valid for it."""
    blocks = BLOCK.findall(text)
    if not blocks or "\n".join(f"<tool_call>\n{b}\n</tool_call>" for b in blocks) != text.strip():
        return False
    params = {t["function"]["name"]: normalize_schema(t["function"].get("parameters") or {}) for t in tools}
    for block in blocks:
        try:
            call = json.loads(block)
            jsonschema.validate(call["arguments"], params[call["name"]])
        except (ValueError, KeyError, TypeError, jsonschema.ValidationError, jsonschema.SchemaError):
            return False
    return True


def run_side(
    engine: HFEngine, batches: list[list[Request]], params: GenerationParams, prefill_s: list[float]
) -> dict[str, Any]:
    """Generate batch by batch (each one engine batch); decoding time is each batch's time less its prefill."""
    texts, tokens, seconds, decode_s, row_steps = [], 0, 0.0, 0.0, 0
    mask_before = MASK_TIME["seconds"]
    for batch, prefill in zip(batches, prefill_s, strict=True):
        start = time.perf_counter()
        outs = engine.generate(batch, params)
        took = time.perf_counter() - start
        steps = max(o.usage.completion_tokens for o in outs)
        texts += [o.text for o in outs]
        tokens += sum(o.usage.completion_tokens for o in outs)
        seconds += took
        decode_s += max(took - prefill, 1e-9)
        row_steps += len(batch) * max(steps - 1, 0)  # the first token comes out of the prefill
    return {
        "texts": texts,
        "tokens": tokens,
        "seconds": seconds,
        "end_to_end_tokens_per_s": tokens / seconds,
        "tokens_per_s": row_steps / decode_s,
        "mask_share": (MASK_TIME["seconds"] - mask_before) / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="8 questions x 64 tokens, 3 repeats (under 3 minutes)")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.repeats = 8, 3

    load_before = os.getloadavg()
    engine = HFEngine(load_model("default"), batch_size=args.batch_size)
    items = questions(args.prompts)
    constraints = [Constraint(type="tool_calls", tools=q["tools"], mode="required", parallel=False) for q in items]

    # Compile cost, cold: the tokenizer view once, then each schema (the timed runs below hit the cache).
    start = time.perf_counter()
    compiled_matcher(Constraint(type="json_object"), engine.tokenizer)
    tokenizer_s = time.perf_counter() - start
    start = time.perf_counter()
    for c in constraints:
        compiled_matcher(c, engine.tokenizer)
    compile_ms = (time.perf_counter() - start) * 1000 / len(constraints)

    def batched(requests: list[Request]) -> list[list[Request]]:
        return [requests[i : i + args.batch_size] for i in range(0, len(requests), args.batch_size)]

    free = batched([Request(messages=q["messages"]) for q in items])
    constrained = batched(
        [Request(messages=q["messages"], constraint=c) for q, c in zip(items, constraints, strict=True)]
    )
    params = GenerationParams(max_new_tokens=args.max_new_tokens)
    engine.generate(free[0][:1], GenerationParams(max_new_tokens=4))  # warm-up: first-call allocations
    prefill_s = []
    for batch in free:  # the same prompts on both sides: one prefill measurement serves both (best of 2)
        times = []
        for _ in range(2):
            start = time.perf_counter()
            engine.generate(batch, GenerationParams(max_new_tokens=1))
            times.append(time.perf_counter() - start)
        prefill_s.append(min(times))
    best: dict[str, dict[str, Any]] = {}
    for _ in range(args.repeats):
        for side, requests in (("free", free), ("constrained", constrained)):
            result = run_side(engine, requests, params, prefill_s)
            if side not in best or result["tokens_per_s"] > best[side]["tokens_per_s"]:
                best[side] = result

    report: dict[str, Any] = {}
    for side, result in best.items():
        ok = [valid_calls(t, q["tools"]) for t, q in zip(result["texts"], items, strict=True)]
        report[side] = {
            "tokens_per_s": round(result["tokens_per_s"], 2),
            "end_to_end_tokens_per_s": round(result["end_to_end_tokens_per_s"], 2),
            "tokens": result["tokens"],
            "seconds": round(result["seconds"], 2),
            "schema_valid": round(sum(ok) / len(ok), 3),
            "mask_share": round(result["mask_share"], 4),
        }
        print(f"{side:>12}: {report[side]}")
        print(f"{'':>12}  e.g. {result['texts'][0][:160]!r}")
    ratio = best["constrained"]["tokens_per_s"] / best["free"]["tokens_per_s"]
    ratio_e2e = best["constrained"]["end_to_end_tokens_per_s"] / best["free"]["end_to_end_tokens_per_s"]
    print(
        json.dumps(
            {
                "benchmark": "constrained_decoding",
                "ratio": round(ratio, 3),
                "target": ">= 0.9",
                "ratio_end_to_end": round(ratio_e2e, 3),
                "free_tokens_per_s": report["free"]["tokens_per_s"],
                "constrained_tokens_per_s": report["constrained"]["tokens_per_s"],
                "prefill_s": [round(x, 2) for x in prefill_s],
                "mask_share": report["constrained"]["mask_share"],
                "free_schema_valid": report["free"]["schema_valid"],
                "constrained_schema_valid": report["constrained"]["schema_valid"],
                "compile_ms_per_schema": round(compile_ms, 2),
                "tokenizer_s": round(tokenizer_s, 3),
                "grammar_cache": cache_info(engine.tokenizer),
                "library": "llguidance " + _version("llguidance"),
                "prompts": args.prompts,
                "max_new_tokens": args.max_new_tokens,
                "batch_size": args.batch_size,
                "repeats": args.repeats,
                "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                "machine": machine(),
            }
        )
    )


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
