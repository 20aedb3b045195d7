"""Build a "bring your own QA" task from XQuAD-en, shaped like issue #15's papers task.

The shape a new user brings (issue #15: long scientific papers with questions about them):

- ``docs/``: one ``.txt`` file per article (its paragraphs joined by blank lines), so every document is long and
  splits into several chunks; the file name is a slug of the article title, not an id the QA files refer to;
- ``eval.jsonl`` and ``train.jsonl``: columns ``question`` and ``answer`` only, ``answer`` a list of strings (the
  XQuAD answers, deduplicated, in order). No ids, no doc ids, no contexts: RAFT has to find each training
  question's gold passage by matching its answer in the chunks.
- split by article: no eval article has a question in train (every article stays in ``docs/``, as a user's
  corpus holds the papers of both splits).

Source: google-deepmind/xquad@7d30520 xquad.en.json (the English SQuAD v1.1 dev subset), CC BY-SA 4.0. The output
is a derivative: keep the credit and the license with it. It is written outside the repository by default.

    python scripts/build_byo_qa_example.py [OUT_DIR] [--eval-articles 12] [--seed 0]
    tailor init OUT_DIR --eval OUT_DIR/eval.jsonl --train OUT_DIR/train.jsonl --documents OUT_DIR/docs
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "xquad" / "xquad.en.json"
CREDIT = (
    "Derived from XQuAD (google-deepmind/xquad@7d30520, xquad.en.json: the English SQuAD v1.1 dev subset), "
    "CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/). Articles from Wikipedia. Changes: one text "
    "file per article (paragraphs joined), columns renamed to question/answer, ids dropped, split by article.\n"
)


def slug(title: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-").lower() or "article"


def build(source: Path, out: Path, eval_articles: int = 12, seed: int = 0) -> dict[str, int]:
    data = json.loads(source.read_text(encoding="utf-8"))["data"]
    order = list(range(len(data)))
    random.Random(seed).shuffle(order)
    eval_ids = set(order[:eval_articles])
    docs = out / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict]] = {"eval": [], "train": []}
    lengths = []
    for i, article in enumerate(data):
        text = "\n\n".join(p["context"].strip() for p in article["paragraphs"])
        title = article["title"].replace("_", " ")
        (docs / f"{slug(title)}.txt").write_text(f"{title}\n\n{text}\n", encoding="utf-8")
        lengths.append(len(text))
        split = "eval" if i in eval_ids else "train"
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                answers = list(dict.fromkeys(a["text"].strip() for a in qa["answers"] if a["text"].strip()))
                rows[split].append({"question": qa["question"].strip(), "answer": answers})
    for split, records in rows.items():
        random.Random(seed).shuffle(records)  # questions of one article are not adjacent, as in a user's file
        (out / f"{split}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8"
        )
    (out / "LICENSE-DATA.txt").write_text(CREDIT, encoding="utf-8")
    return {
        "documents": len(data),
        "eval": len(rows["eval"]),
        "train": len(rows["train"]),
        "doc_chars_min": min(lengths),
        "doc_chars_max": max(lengths),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default="/tmp/byo-qa", type=Path)
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--eval-articles", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    stats = build(args.source, args.out, args.eval_articles, args.seed)
    print(
        f"wrote {args.out}: {stats['documents']} documents ({stats['doc_chars_min']:,}-{stats['doc_chars_max']:,} "
        f"characters), {stats['eval']} eval and {stats['train']} train questions (split by article)"
    )


if __name__ == "__main__":
    main()
