"""Build examples/xquad/eval.jsonl: 100 XQuAD (English) questions with their gold paragraph.

Source: google-deepmind/xquad@7d30520 xquad.en.json (the English SQuAD v1.1 dev subset), CC BY-SA 4.0.
Run from the repository root with ../shared/data beside it:

    python scripts/build_xquad_example.py [--n 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "xquad" / "xquad.en.json"
OUT = Path(__file__).resolve().parents[1] / "examples" / "xquad" / "eval.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = json.loads(SOURCE.read_text(encoding="utf-8"))["data"]
    rows = []
    for article in data:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                answers = list(dict.fromkeys(a["text"] for a in qa["answers"]))  # unique, in order
                rows.append(
                    {
                        "id": qa["id"],
                        "question": qa["question"],
                        "answers": answers,
                        "context": para["context"],
                        "title": article["title"],
                    }
                )
    sample = sorted(random.Random(args.seed).sample(range(len(rows)), args.n))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("".join(json.dumps(rows[i], ensure_ascii=False) + "\n" for i in sample), encoding="utf-8")
    print(f"wrote {args.n} of {len(rows)} questions to {OUT}")


if __name__ == "__main__":
    main()
