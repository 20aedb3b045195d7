"""Build the XQuAD-en RAG corpora and questions from ../shared/data/xquad (CC BY-SA 4.0, google-deepmind/xquad).

Two layouts of the same text, for the same 1,190 questions:
- ``paragraphs``: the 240 paragraphs as records of one JSONL file (the issue's target setting; gold = doc_ids);
- ``articles``: the 48 articles as Markdown files (``# Title`` then the paragraphs), which the chunker must split;
  gold = the answer's character span in the article, so a chunk counts only if it holds the answer.

    python scripts/build_xquad_rag.py OUT_DIR [--xquad ../shared/data/xquad/xquad.en.json]
    python scripts/build_xquad_rag.py --example examples/xquad-rag   # the bundled example task
    python scripts/build_xquad_rag.py --split-example examples/xquad-qa   # train/eval split by article
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ATTRIBUTION = (
    "Derived from XQuAD (English), https://github.com/google-deepmind/xquad, licensed CC BY-SA 4.0; "
    "itself from SQuAD v1.1 (Rajpurkar et al., 2016). Text unchanged; files regrouped.\n"
)


def slug(title: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", title).strip("-").lower()


def build(xquad: Path, out: Path) -> dict[str, int]:
    data = json.loads(xquad.read_text(encoding="utf-8"))["data"]
    (out / "paragraphs").mkdir(parents=True, exist_ok=True)
    (out / "articles").mkdir(parents=True, exist_ok=True)
    para_rows, q_para, q_art = [], [], []
    for a_i, article in enumerate(data):
        title = article["title"]
        header = f"# {title}\n\n"
        parts, offset = [], len(header)
        name = f"{a_i:02d}-{slug(title)}.md"
        for p_i, para in enumerate(article["paragraphs"]):
            pid = f"a{a_i:02d}-p{p_i}"
            context = para["context"]
            para_rows.append({"id": pid, "title": title, "text": context})
            for qa in para["qas"]:
                answers = [x["text"] for x in qa["answers"]]
                start = qa["answers"][0]["answer_start"]
                end = start + len(qa["answers"][0]["text"])
                base = {"id": qa["id"], "input": qa["question"], "reference": answers}
                q_para.append({**base, "doc_ids": [f"paragraphs.jsonl#{pid}"]})
                q_art.append({**base, "gold": [{"doc_id": name, "start": offset + start, "end": offset + end}]})
                assert context[start:end] == qa["answers"][0]["text"]
            parts.append(context)
            offset += len(context) + 2
        text = header + "\n\n".join(parts) + "\n"
        (out / "articles" / name).write_text(text, encoding="utf-8")
        for q in q_art[-sum(len(p["qas"]) for p in article["paragraphs"]) :]:
            g = q["gold"][0]
            assert q["reference"][0] == text[g["start"] : g["end"]], q["id"]
    with open(out / "paragraphs" / "paragraphs.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in para_rows)
    for name, rows in (("questions-paragraphs.jsonl", q_para), ("questions-articles.jsonl", q_art)):
        with open(out / name, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (out / "ATTRIBUTION.txt").write_text(ATTRIBUTION, encoding="utf-8")
    return {"articles": len(data), "paragraphs": len(para_rows), "questions": len(q_para)}


def build_example(xquad: Path, out: Path, n_eval: int = 200, seed: int = 0) -> dict[str, int]:
    """The bundled task: all 240 paragraphs as documents, ``n_eval`` questions drawn evenly from all articles."""
    import random
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        counts = build(xquad, Path(tmp))
        out.mkdir(parents=True, exist_ok=True)
        (out / "docs").mkdir(exist_ok=True)
        shutil.copy(Path(tmp) / "paragraphs" / "paragraphs.jsonl", out / "docs" / "paragraphs.jsonl")
        rows = [json.loads(x) for x in (Path(tmp) / "questions-paragraphs.jsonl").read_text().splitlines()]
    rng = random.Random(seed)
    chosen = sorted(rng.sample(range(len(rows)), n_eval))
    with open(out / "eval.jsonl", "w", encoding="utf-8") as f:
        for i in chosen:
            f.write(json.dumps(rows[i], ensure_ascii=False) + "\n")
    return {**counts, "eval": n_eval}


def build_split_example(
    xquad: Path, out: Path, train_fraction: float = 0.75, n_eval: int = 200, seed: int = 0
) -> dict[str, int]:
    """Train on the questions of ~3/4 of the articles, evaluate on questions of the others (issue #6's RAFT target).

    Splitting by article, not by question, keeps every eval passage unseen in training: a fine-tuned model cannot
    have memorized the answers' paragraphs, so what it learns is the skill (read the sources, answer briefly).
    """
    import random
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        build(xquad, Path(tmp))
        out.mkdir(parents=True, exist_ok=True)
        (out / "docs").mkdir(exist_ok=True)
        shutil.copy(Path(tmp) / "paragraphs" / "paragraphs.jsonl", out / "docs" / "paragraphs.jsonl")
        rows = [json.loads(x) for x in (Path(tmp) / "questions-paragraphs.jsonl").read_text().splitlines()]
    article = {r["id"]: r["doc_ids"][0].split("#")[1].split("-")[0] for r in rows}
    articles = sorted(set(article.values()))
    rng = random.Random(seed)
    train_articles = set(rng.sample(articles, round(train_fraction * len(articles))))
    train = [r for r in rows if article[r["id"]] in train_articles]
    held = [r for r in rows if article[r["id"]] not in train_articles]
    eval_rows = [held[i] for i in sorted(rng.sample(range(len(held)), min(n_eval, len(held))))]
    for name, chosen in (("train.jsonl", train), ("eval.jsonl", eval_rows)):
        with open(out / name, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in chosen)
    return {
        "train_articles": len(train_articles),
        "train": len(train),
        "eval_articles": len(articles) - len(train_articles),
        "eval": len(eval_rows),
    }


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, nargs="?")
    parser.add_argument("--example", type=Path, help="Write the bundled example task folder here instead.")
    parser.add_argument("--split-example", type=Path, help="Write the train/eval split-by-article example here.")
    parser.add_argument("--xquad", type=Path, default=here.parent / "shared/data/xquad/xquad.en.json")
    args = parser.parse_args()
    if args.example:
        print(json.dumps(build_example(args.xquad, args.example)))
    elif args.split_example:
        print(json.dumps(build_split_example(args.xquad, args.split_example)))
    elif args.out:
        print(json.dumps(build(args.xquad, args.out)))
    else:
        parser.error("give OUT_DIR or --example DIR")


if __name__ == "__main__":
    main()
