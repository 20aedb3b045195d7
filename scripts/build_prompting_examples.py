"""Build the prompting examples from ../shared/data: GSM8K (MIT) and SST-2 (MIT repo, from the Stanford
Sentiment Treebank). Deterministic; run from the repository root:

    python scripts/build_prompting_examples.py
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CALC = re.compile(r"<<[^>]*>>")  # GSM8K calculator annotations, e.g. <<48/2=24>>


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _yaml(path: Path, header: str, obj: dict) -> None:
    path.write_text(header + yaml.safe_dump(obj, sort_keys=False, allow_unicode=True, width=119), encoding="utf-8")


def gsm8k() -> None:
    rows = [json.loads(line) for line in (DATA / "gsm8k" / "train.jsonl").read_text().splitlines()]
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    demos = [rows[i] for i in order[100:104]]  # the eval set is order[:100]
    out = ROOT / "examples" / "gsm8k"
    _jsonl(out / "eval.jsonl", [{"id": f"gsm8k-{i}", **rows[i]} for i in order[:100]])

    def final(answer: str) -> str:
        return answer.split("####")[-1].strip().replace(",", "")

    def chain(answer: str) -> str:
        steps = CALC.sub("", answer.split("####")[0]).strip()
        return f"{steps}\nThe answer is {final(answer)}."

    instruction = "Solve the math word problem. End your reply with 'The answer is N.' where N is a number."
    head = "# GSM8K prompt program; demonstrations are GSM8K train problems outside the eval set (MIT).\n"
    extract = {"method": "last_number"}
    _yaml(out / "programs" / "zero-shot.yaml", head, {"system": instruction, "answer": extract})
    few = [{"input": d["question"], "output": f"The answer is {final(d['answer'])}."} for d in demos]
    _yaml(out / "programs" / "few-shot.yaml", head, {"system": instruction, "few_shot": few, "answer": extract})
    cot_demos = [{"input": d["question"], "output": chain(d["answer"])} for d in demos]
    cot = {
        "system": instruction,
        "few_shot": cot_demos,
        "chain_of_thought": "Let's think step by step.",
        "answer": extract,
    }
    _yaml(out / "programs" / "cot.yaml", head, cot)
    _yaml(out / "programs" / "cot-sc.yaml", head, {**cot, "self_consistency": {"n": 5, "temperature": 0.7}})


def sst2() -> None:
    def read(name: str) -> list[dict]:
        rows = []
        for line in (DATA / "sst" / name).read_text(encoding="utf-8").splitlines():
            text, label = line.rsplit("\t", 1)
            rows.append({"text": text, "label": "positive" if label.strip() == "1" else "negative"})
        return rows

    dev, train = read("sst2_dev.tsv"), read("sst2_train.tsv")
    rng = random.Random(0)
    out = ROOT / "examples" / "sst2"
    sample = sorted(rng.sample(range(len(dev)), 200))
    _jsonl(out / "eval.jsonl", [{"id": f"sst2-dev-{i}", **dev[i]} for i in sample])
    pool = [train[i] for i in sorted(rng.sample(range(len(train)), 200))]
    instruction = "Classify the sentiment of the movie review as positive or negative. Answer with one word."
    head = (
        "# SST-2 prompt program; the few-shot pool is 200 SST-2 train sentences "
        "(MIT repo; Stanford Sentiment Treebank).\n"
    )
    extract = {"method": "label", "labels": ["negative", "positive"]}
    _yaml(out / "programs" / "zero-shot.yaml", head, {"system": instruction, "answer": extract})
    few = [{"input": p["text"], "output": p["label"], "label": p["label"]} for p in pool]
    semantic = {
        "system": instruction,
        "few_shot": few,
        "selection": {"strategy": "semantic", "k": 4},
        "answer": extract,
    }
    _yaml(out / "programs" / "semantic-few-shot.yaml", head, semantic)


def sst2_ladder() -> None:
    """The classification ladder example: the same 200 dev sentences as examples/sst2, and 2,000 train sentences.

    Records are canonical eval records whose metadata names the label set, so `accuracy` maps a generated answer
    ("Sentiment: positive.") to a label, as it does for a head's label.
    """

    def read(name: str) -> list[tuple[str, str]]:
        rows = []
        for line in (DATA / "sst" / name).read_text(encoding="utf-8").splitlines():
            text, label = line.rsplit("\t", 1)
            rows.append((text, "positive" if label.strip() == "1" else "negative"))
        return rows

    labels = ["negative", "positive"]
    dev, train = read("sst2_dev.tsv"), read("sst2_train.tsv")
    rng = random.Random(0)
    sample = sorted(rng.sample(range(len(dev)), 200))  # the draw of sst2(): the same 200 sentences
    out = ROOT / "examples" / "sst2-ladder"
    out.mkdir(parents=True, exist_ok=True)

    def record(prefix: str, i: int, row: tuple[str, str]) -> dict:
        return {"id": f"{prefix}-{i}", "input": row[0], "reference": row[1], "metadata": {"labels": labels}}

    _jsonl(out / "eval.jsonl", [record("sst2-dev", i, dev[i]) for i in sample])
    picked = sorted(random.Random(1).sample(range(len(train)), 2000))
    _jsonl(out / "train.jsonl", [record("sst2-train", i, train[i]) for i in picked])


if __name__ == "__main__":
    gsm8k()
    sst2()
    sst2_ladder()
    print("wrote examples/gsm8k, examples/sst2 and examples/sst2-ladder")
