"""Build the packaged forgetting-canary set, ``src/tailorlm/eval/data/canaries.jsonl``, from ``../shared/data``.

Deterministic: the same source files and seed give a byte-identical file. Run from the repository root:

    python scripts/build_canaries.py            # or --data PATH --out PATH --seed N

Sources and licences (see src/tailorlm/eval/data/CANARIES_LICENSE.md):
- MMLU validation split (Hendrycks et al., MIT), via artidoro/qlora's zero_shot_mmlu_val.jsonl (MIT);
- ARC-Challenge and ARC-Easy (Clark et al., AI2, CC BY-SA 4.0), via mosaicml/llm-foundry's local eval data;
- BoolQ (Clark et al., Google, CC BY-SA 3.0), via the same llm-foundry folder.

Every item is rewritten as a cloze-style log-likelihood question: ``context`` ends in ``"Answer:"`` and each
choice is scored as ``" " + choice`` (lm-evaluation-harness's ``target_delimiter``). MMLU is rewritten from its
lettered form ("A. ... Answer: B") to the cloze form (score the answer text itself), because a 135M model cannot
yet map letters to options and would sit at chance, which would hide forgetting (the OLMES paper, Gu et al. 2024,
recommends the cloze formulation for small models for the same reason).
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_OUT = REPO / "src" / "tailorlm" / "eval" / "data" / "canaries.jsonl"

# How many items each source contributes, and the longest context kept. The length caps keep the whole suite
# to a few minutes on a 2-core CPU with the 135M default model: scoring cost grows with context tokens times
# choices, and a handful of MMLU passages (European history) and BoolQ passages are several times the median.
PLAN: dict[str, tuple[int, int]] = {  # source: (items, max context characters)
    "mmlu": (100, 600),
    "arc_challenge": (50, 600),
    "arc_easy": (50, 600),
    "boolq": (100, 800),
}

_MMLU = re.compile(
    r"^The following are multiple choice questions \(with answers\) about\s+(?P<subject_text>[^\n]*)\.\n\n"
    r"(?P<question>.*)\nA\. (?P<a>.*?)\nB\. (?P<b>.*?)\nC\. (?P<c>.*?)\nD\. (?P<d>.*?)\nAnswer:$",
    re.DOTALL,
)


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if line.strip():
                yield line_no, json.loads(line)


def mmlu_items(path: Path) -> list[dict[str, Any]]:
    items = []
    for line_no, row in _jsonl(path):
        m = _MMLU.match(row["input"])
        if m is None or row["output"] not in "ABCD":
            continue  # a question whose options cannot be split unambiguously is left out, not guessed
        items.append(
            {
                "id": f"mmlu-val-{line_no}",
                "source": "mmlu",
                "context": f"Question: {m['question'].strip()}\nAnswer:",
                "choices": [m[k].strip() for k in "abcd"],
                "answer": "ABCD".index(row["output"]),
                "subject": row["subject"],
            }
        )
    return items


def foundry_items(path: Path, source: str) -> list[dict[str, Any]]:
    """ARC rows hold ``"Question: ..."``; BoolQ rows ``"Passage: ...\\nQuestion: ..."``. Both get ``"\\nAnswer:"``,
    the prompt lm-evaluation-harness's arc and boolq tasks use."""
    items = []
    for line_no, row in _jsonl(path):
        items.append(
            {
                "id": f"{source}-{line_no}",
                "source": source,
                "context": row["query"].rstrip() + "\nAnswer:",
                "choices": [str(c).strip() for c in row["choices"]],
                "answer": int(row["gold"]),
            }
        )
    return items


def build(data: Path, seed: int = 0) -> list[dict[str, Any]]:
    pools = {
        "mmlu": mmlu_items(data / "mmlu" / "zero_shot_mmlu_val.jsonl"),
        "arc_challenge": foundry_items(data / "llm_foundry" / "arc_challenge.jsonl", "arc_challenge"),
        "arc_easy": foundry_items(data / "llm_foundry" / "arc_easy.jsonl", "arc_easy"),
        "boolq": foundry_items(data / "llm_foundry" / "boolq.jsonl", "boolq"),
    }
    chosen: list[dict[str, Any]] = []
    for source, (count, max_chars) in PLAN.items():
        eligible = [it for it in pools[source] if len(it["context"]) <= max_chars and len(set(it["choices"])) > 1]
        # One generator per source, so that changing one source's count leaves the others' samples unchanged.
        rng = random.Random(f"{seed}-{source}")
        picked = rng.sample(eligible, count)
        chosen.extend(sorted(picked, key=lambda it: int(it["id"].rsplit("-", 1)[1])))
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSONL")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    items = build(args.data, args.seed)
    text = "".join(json.dumps(it, ensure_ascii=False) + "\n" for it in items)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    counts: dict[str, int] = {}
    for it in items:
        counts[it["source"]] = counts.get(it["source"], 0) + 1
    print(json.dumps({"out": str(args.out), "n": len(items), "by_source": counts}))


if __name__ == "__main__":
    main()
