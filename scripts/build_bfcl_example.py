"""Build examples/bfcl/: one tool-calling task per BFCL category, scored with the tool_ast and tool_call_valid metrics.

Source: ShishirPatil/gorilla@6ea5797, berkeley-function-call-leaderboard/bfcl_eval/data (BFCL v4, the non-live
Python categories) and its possible_answer/ folder; Apache-2.0. Patil et al., "The Berkeley Function Calling
Leaderboard" (2024). Run from the repository root with ../shared/data beside it:

    python scripts/build_bfcl_example.py [--seed 0]

Writes ``examples/bfcl/<category>/eval.jsonl`` for simple_python, multiple, parallel, parallel_multiple and
irrelevance. simple_python is split 75/25 by question (seed 0): the 75% become chat records with ``tool_calls``
(``train.jsonl``, for LoRA) and the other 25% the eval set, so no eval question is trained on. The conversion is
``tailor data convert-bfcl``'s, so the same files come from the CLI:

    tailor data convert-bfcl BFCL_v4_simple_python.json --answers possible_answer/BFCL_v4_simple_python.json \\
        --to chat --out train.jsonl --split 0.75 --seed 0 --out-rest eval.jsonl --rest-to eval
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tailorlm.data.bfcl import CATEGORIES, convert_bfcl

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "bfcl"
OUT = ROOT / "examples" / "bfcl"
TRAIN_FRACTION = 0.75


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for category in CATEGORIES:
        questions = SOURCE / f"BFCL_v4_{category}.json"
        answers = SOURCE / "possible_answer" / f"BFCL_v4_{category}.json"
        answers_path = answers if answers.exists() else None  # irrelevance has none: no call is the answer
        if category == "simple_python":
            train, held_out = convert_bfcl(
                questions, answers_path, "chat", split=TRAIN_FRACTION, seed=args.seed, rest_to="eval"
            )
            _jsonl(OUT / category / "train.jsonl", train)
            _jsonl(OUT / category / "eval.jsonl", held_out)
            print(f"{category}: {len(train)} train (chat), {len(held_out)} eval")
        else:
            rows, _ = convert_bfcl(questions, answers_path, "eval")
            _jsonl(OUT / category / "eval.jsonl", rows)
            print(f"{category}: {len(rows)} eval")


if __name__ == "__main__":
    main()
