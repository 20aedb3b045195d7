"""Judge agreement: tailorlm's pairwise judge vs trivial judges, against AlpacaEval's GPT-4 preferences.

All judges see the same seeded sample of AlpacaEval pairs (gpt4 vs text-davinci-003), with the two outputs put
into slots A/B by a seeded coin flip. Ours asks the judge model in both orders (MT-Bench's swap) and counts an
inconsistent item as wrong. The baselines are what a user might use instead of an LLM judge: "the longer answer
wins" (the baseline of ``ratio``) and "always prefer A". The last line printed is one JSON object.

    python benchmarks/judge_agreement.py --quick                 # 30 pairs, under 3 minutes on 2 CPU cores
    python benchmarks/judge_agreement.py --n 100 --mode logprob  # the figure in docs/judge.md
    python benchmarks/judge_agreement.py --mode generate --judge gpt-4o-mini --base-url https://api.openai.com/v1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tailorlm.core.cpu import machine
from tailorlm.eval.judge_agreement import (
    ANNOTATIONS_FILE,
    agreement,
    evaluate_judge,
    first_position_winners,
    length_winners,
    load_alpaca_eval_annotations,
    sample_pairs,
)
from tailorlm.models.engines.base import GenerationParams

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="30 pairs, answers cut to 128 tokens")
    ap.add_argument("--n", type=int, default=None, help="pairs to judge (default 100; 30 with --quick)")
    ap.add_argument("--mode", choices=["logprob", "generate"], default="logprob")
    ap.add_argument("--judge", default="default", help="judge model: HF folder, hub id or 'default'")
    ap.add_argument("--base-url", default=None, help="judge through an OpenAI-compatible endpoint (generate mode)")
    ap.add_argument("--max-output-tokens", type=int, default=None, help="cut each answer (default 256; 128 quick)")
    ap.add_argument("--max-new-tokens", type=int, default=256, help="generate mode: the judge's token budget")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=SHARED_DATA / ANNOTATIONS_FILE)
    args = ap.parse_args(argv)
    n = args.n or (30 if args.quick else 100)
    max_output_tokens = args.max_output_tokens or (128 if args.quick else 256)

    items = sample_pairs(load_alpaca_eval_annotations(args.data), n, seed=args.seed)
    labels = [it["label"] for it in items]
    length = agreement(length_winners(items), labels)
    always_a = agreement(first_position_winners(items), labels)

    if args.base_url:
        from tailorlm.models.engines.openai import OpenAIEngine

        engine = OpenAIEngine(args.judge, base_url=args.base_url)
    else:
        from tailorlm.models.engines.hf import HFEngine

        engine = HFEngine(args.judge, batch_size=args.batch_size)
    start = time.perf_counter()
    ours = evaluate_judge(
        engine,
        items,
        mode=args.mode,
        max_output_tokens=max_output_tokens,
        params=GenerationParams(max_new_tokens=args.max_new_tokens),
    )
    wall = time.perf_counter() - start

    def fmt(x: float | None) -> str:
        return "  -  " if x is None else f"{x:5.3f}"

    print(f"{len(items)} AlpacaEval pairs, judge={args.judge}, mode={args.mode}, answers cut to {max_output_tokens}")
    print(f"{'judge':<28}{'agree':>7}{'agree|cons':>12}{'consist':>9}{'kappa':>8}")
    rows = [("ours (both orders)", ours), ("length heuristic", length), ("always A", always_a)]
    if "debiased" in ours:
        rows.insert(1, ("ours, mean margin", ours["debiased"]))
    for name, r in rows:
        cons = fmt(r["agreement_consistent"])
        print(f"{name:<28}{fmt(r['agreement']):>7}{cons:>12}{fmt(r['consistency']):>9}{fmt(r['kappa']):>8}")
    print(f"position bias (slot-A share of first-order wins): {fmt(ours.get('position_bias'))}")

    result = {
        "n": len(items),
        "judge": args.judge,
        "mode": args.mode,
        "max_output_tokens": max_output_tokens,
        "ours_agreement": ours["agreement"],
        "ours_agreement_consistent": ours["agreement_consistent"],
        "ours_consistency": ours["consistency"],
        "ours_kappa": ours["kappa"],
        "ours_position_bias": ours.get("position_bias"),
        "ours_debiased_agreement": ours["debiased"]["agreement"] if "debiased" in ours else None,
        "baseline_agreement": length["agreement"],
        "always_a_agreement": always_a["agreement"],
        "ratio": (ours["agreement"] / length["agreement"]) if length["agreement"] else None,
        "wall_s": round(wall, 2),
    }
    result["machine"] = machine()
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
