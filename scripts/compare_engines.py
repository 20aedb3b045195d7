"""Two ladder runs of one task, answered by two engines: per rung, identical answers and the paired metric difference.

Run the ladder twice on the same machine, once per engine, then compare:

    TAILOR_ENGINE=hf tailor ladder examples/xquad-qa/task.yaml --out runs/demo-hf
    tailor ladder examples/xquad-qa/task.yaml --out runs/demo-auto
    python scripts/compare_engines.py runs/demo-auto runs/demo-hf

For every rung both runs completed, it prints the engines, the share of identical greedy answers, and the paired
bootstrap difference (A − B) of each metric with its 95% CI and p-value, over the same eval examples; then canary
accuracy the same way. The last line is one JSON object. An engine is equivalent for eval where every CI holds 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tailorlm.eval.stats import paired_bootstrap


def _rungs(ladder: Path) -> dict[str, dict[str, Any]]:
    data = json.loads((ladder / "ladder.json").read_text(encoding="utf-8"))
    rungs = data.get("rungs", data) if isinstance(data, dict) else data
    items = rungs.values() if isinstance(rungs, dict) else rungs
    return {r["name"]: r for r in items if r.get("status") == "complete" and r.get("eval_run")}


def _predictions(eval_run: str) -> dict[str, dict[str, Any]]:
    rows = (Path(eval_run) / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    return {(r := json.loads(line))["id"]: r for line in rows if line.strip()}


def _engine(eval_run: str) -> str:
    metrics = json.loads((Path(eval_run) / "metrics.json").read_text(encoding="utf-8"))
    engine = metrics.get("engine") or {"engine": "hf"}
    return "/".join(str(engine[k]) for k in ("engine", "compute_type") if k in engine)


def compare(a_dir: Path, b_dir: Path) -> dict[str, Any]:
    a_rungs, b_rungs = _rungs(a_dir), _rungs(b_dir)
    out: dict[str, Any] = {}
    for name in [n for n in a_rungs if n in b_rungs]:
        a, b = _predictions(a_rungs[name]["eval_run"]), _predictions(b_rungs[name]["eval_run"])
        ids = [i for i in a if i in b]
        same = sum(a[i]["prediction"].strip() == b[i]["prediction"].strip() for i in ids)
        metrics = {}
        for metric in a[ids[0]]["scores"] if ids else []:
            diff = paired_bootstrap(
                [float(a[i]["scores"][metric]) for i in ids], [float(b[i]["scores"][metric]) for i in ids]
            )
            metrics[metric] = {k: round(v, 4) for k, v in diff.items()}
        canaries = {
            side: (rungs[name].get("canaries") or {}).get("after") for side, rungs in (("a", a_rungs), ("b", b_rungs))
        }
        out[name] = {
            "engines": [_engine(a_rungs[name]["eval_run"]), _engine(b_rungs[name]["eval_run"])],
            "n": len(ids),
            "identical": round(same / max(len(ids), 1), 3),
            "metrics": metrics,
            "canary_after": canaries,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="Ladder folder answered by engine A (e.g. auto → ct2).")
    parser.add_argument("b", type=Path, help="Ladder folder answered by engine B (e.g. TAILOR_ENGINE=hf).")
    args = parser.parse_args()
    for folder in (args.a, args.b):
        if not (folder / "ladder.json").is_file():
            sys.exit(f"{folder}: no ladder.json (run `tailor ladder … --out {folder}` first)")
    result = compare(args.a, args.b)
    for name, r in result.items():
        cells = "  ".join(
            f"{m} {d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] p={d['p_value']:.2f}"
            for m, d in r["metrics"].items()
        )
        print(f"{name:18} {' vs '.join(r['engines']):18} n={r['n']:<4} identical {r['identical']:.0%}  {cells}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
