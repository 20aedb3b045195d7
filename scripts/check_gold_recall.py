"""Check rag/gold.py's MIN_TOKEN_RECALL on XQuAD-en (../shared/data/xquad): how far a sentence's token recall
falls in passages that do not hold it, and how high an edited copy scores in the one that does. Prints JSON.

    python scripts/check_gold_recall.py [--xquad ../shared/data/xquad/xquad.en.json]

For every sentence of 8+ normalized tokens (LONG_ANSWER_TOKENS), paragraphs standing in for chunks:
- ``same_article``: its best recall in another paragraph of its article (same topic, not the sentence);
- ``other_articles``: its best recall in any paragraph of another article;
- ``edited``: a copy with one word in five replaced at random, in its own paragraph.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
from collections import Counter
from pathlib import Path

from tailorlm.rag.gold import LONG_ANSWER_TOKENS, MIN_TOKEN_RECALL, normalize, token_recall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--xquad", type=Path, default=Path("../shared/data/xquad/xquad.en.json"))
    args = parser.parse_args()
    data = json.loads(args.xquad.read_text(encoding="utf-8"))["data"]
    paras = [(i, p["context"]) for i, a in enumerate(data) for p in a["paragraphs"]]
    bags = [Counter(normalize(text).split()) for _, text in paras]
    vocab = [w for bag in bags for w in bag]
    rng = random.Random(0)
    scores: dict[str, list[float]] = {"same_article": [], "other_articles": [], "edited": []}
    for i, (article, text) in enumerate(paras):
        for sentence in re.split(r"(?<=[.!?])\s+", text):
            tokens = normalize(sentence).split()
            if len(tokens) < LONG_ANSWER_TOKENS:
                continue
            others = [(a, bag) for j, ((a, _), bag) in enumerate(zip(paras, bags, strict=True)) if j != i]
            scores["same_article"].append(max((token_recall(tokens, b) for a, b in others if a == article), default=0))
            scores["other_articles"].append(max(token_recall(tokens, b) for a, b in others if a != article))
            edited = [rng.choice(vocab) if rng.random() < 0.2 else t for t in tokens]
            scores["edited"].append(token_recall(edited, bags[i]))
    out: dict[str, object] = {"sentences": len(scores["edited"]), "min_token_recall": MIN_TOKEN_RECALL}
    for name, xs in scores.items():
        q = sorted(xs)
        out[name] = {
            "median": round(statistics.median(xs), 3),
            "p95": round(q[int(0.95 * len(q))], 3),
            "share_at_threshold": round(sum(x >= MIN_TOKEN_RECALL for x in xs) / len(xs), 4),
            "share_at_0.7": round(sum(x >= 0.7 for x in xs) / len(xs), 4),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
