"""Retrieval plus arithmetic: a ReAct agent with a calculator and a search tool against RAG without tools.

The questions (``examples/xquad-agent/questions.jsonl``, 40 hand-written) each need one or two facts from the
XQuAD-en paragraphs and a computation on them: "how many years after X did Y happen", sums, differences,
percentages. Both sides use the default model (SmolLM2-135M), greedy decoding, and the same index over
``examples/xquad-qa/docs`` (hybrid retrieval, 3 passages):

- **rag**: one retrieval with the question, the 3 passages in the prompt, one answer; no tools.
- **agent**: ``run_agent(react=True)`` with ``calculator`` and ``search`` (the same index, top 3), at most 5 model
  turns. The model decides whether to search, what to search for, and whether to compute.

Both get the same user turn: the question and "Give the final answer as a number." Nothing is tuned to these
questions.

What is measured, per side:

- **success** (primary): the *last* number in the final answer equals the reference (``numeric_match``: absolute
  tolerance 1e-6 plus 1e-12 relative for float round-off, so "91.9" matches 56.2 + 35.7 and no integer is off by
  one). Citation markers like "[1]" are removed first. A 95% percentile-bootstrap CI over questions
  (``bootstrap_ci``, 1000 resamples).
- **loose success**: the reference appears as *any* number in the final answer; an upper bound that forgives a
  trailing year or a restated fact after the right result.
- **paired difference** agent − rag in primary success, with its paired-bootstrap 95% CI and p-value.
- for the agent: mean model turns (``steps``), mean tool calls, the share of questions where it called the
  calculator / the search tool at least once, the share that hit the step limit, and how many calls failed
  (invalid arguments, unknown tool, a raising tool).
- seconds per question (generation and retrieval; the index build and model load are excluded).

Each agent trace (every model turn and tool call with inputs, outputs and time) is saved as JSON, and the RAG
answers as ``rag.jsonl``, in one folder that is printed. The last line is JSON with ``machine``, both sides'
figures and ``ratio`` = agent ÷ rag success (null when rag scores 0).

    python benchmarks/agent_xquad.py --quick    # 10 questions, a few minutes on 2 cores
    python benchmarks/agent_xquad.py            # all 40
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tailorlm.core.cpu import machine
from tailorlm.eval.metrics.math import numeric_match
from tailorlm.eval.stats import bootstrap_ci, paired_bootstrap
from tailorlm.rag.answer import strip_citations

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ROOT / "examples/xquad-agent/questions.jsonl"
DOCS = ROOT / "examples/xquad-qa/docs"
SUFFIX = "Give the final answer as a number."
TOP_K = 3
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@dataclass
class Answered:
    """One side's final answer to one question, with what it cost."""

    answer: str
    seconds: float
    steps: int = 1
    tool_calls: int = 0
    tools_used: frozenset[str] = frozenset()
    tool_errors: int = 0
    hit_step_limit: bool = False


def load_questions(path: Path, docs: Path) -> list[dict[str, Any]]:
    """The questions, checked: every quote is in its paragraph and the reference is what the arithmetic gives."""
    from tailorlm.tools.builtins import calculator

    paragraphs = {}
    for line in (docs / "paragraphs.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        paragraphs[rec["id"]] = rec["text"]
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for n, row in enumerate(rows, 1):
        meta = row["metadata"]
        for fact in meta["facts"]:
            if fact["quote"] not in paragraphs[fact["doc_id"]]:
                raise ValueError(f"question {n}: quote not in {fact['doc_id']}: {fact['quote']!r}")
        if not numeric_match(calculator(meta["arithmetic"]), row["reference"]):
            raise ValueError(f"question {n}: {meta['arithmetic']} is not {row['reference']}")
    return rows


def open_index(location: Path) -> Path:
    """The index over the XQuAD paragraphs, built on the first run and reused after (ingest is incremental)."""
    from tailorlm.rag.index import Index
    from tailorlm.rag.ingest import ingest

    idx = Index.open(str(location), create=True)
    try:
        ingest(idx, DOCS, sync=True, progress=False)
    finally:
        idx.close()
    return location


def success(answer: str, reference: str) -> float:
    """Primary: the answer's last number is the reference. Citation markers ("[2]") are not numbers here: RAG
    is asked to cite, and a trailing "[1]" must not count as its answer."""
    return numeric_match(strip_citations(answer), reference)


def loose_success(answer: str, reference: str) -> float:
    """Looser: any number in the answer (citation markers removed) is the reference."""
    return float(any(numeric_match(m.group(0), reference) for m in _NUMBER.finditer(strip_citations(answer))))


class RagSide:
    """RAG without tools: retrieve with the question, answer from the 3 passages in one generation."""

    def __init__(self, engine: Any, index: Path, max_new_tokens: int) -> None:
        from tailorlm.core.system import RetrieverSpec, System
        from tailorlm.models.engines.base import GenerationParams
        from tailorlm.rag.answer import RagAnswerer

        self.engine = engine
        self.system = System(retriever=RetrieverSpec(index=str(index), top_k=TOP_K))
        self.params = GenerationParams(max_new_tokens=max_new_tokens)
        self.answerer = RagAnswerer(self.system, tokenizer=engine.tokenizer, answer_tokens=max_new_tokens)

    def answer(self, question: str) -> Answered:
        from tailorlm.prompting.program import render_messages

        start = time.perf_counter()
        ctx = self.answerer.prepare([f"{question}\n{SUFFIX}"], queries=[question])[0]
        if ctx.abstain:
            text = self.system.retriever.abstain_message if self.system.retriever else ""
        else:
            text = self.engine.generate([render_messages(self.system.prompt, ctx.input)], self.params)[0].text
        return Answered(text.strip(), time.perf_counter() - start)


class AgentSide:
    """The ReAct agent with ``calculator`` and ``search`` (same index, top 3), one conversation per question."""

    def __init__(self, engine: Any, index: Path, max_steps: int, max_new_tokens: int) -> None:
        from tailorlm.models.engines.base import GenerationParams
        from tailorlm.tools.builtins import builtin_registry

        self.engine = engine
        self.registry = builtin_registry(index=index)
        self.params = GenerationParams(max_new_tokens=max_new_tokens)
        self.max_steps = max_steps
        self.first_call: Any = "auto"

    def answer(self, row: dict[str, Any], trace_path: Path) -> Answered:
        """Run the loop; the trace (every turn and call) goes to ``trace_path``."""
        from tailorlm.tools.agent import run_agent

        start = time.perf_counter()
        result = run_agent(
            self.engine,
            [{"role": "user", "content": f"{row['input']}\n{SUFFIX}"}],
            self.registry,
            params=self.params,
            max_steps=self.max_steps,
            react=True,
            first_call=self.first_call,
        )
        seconds = time.perf_counter() - start
        tool_steps = [s for s in result.trace.steps if s.kind == "tool"]
        result.trace.meta = {"question": row["input"], "reference": row["reference"], "answer": result.answer}
        result.trace.save(trace_path)
        return Answered(
            answer=result.answer,
            seconds=seconds,
            steps=result.steps,
            tool_calls=result.tool_calls,
            tools_used=frozenset(str(s.inputs.get("name", "")) for s in tool_steps),
            tool_errors=sum(1 for s in tool_steps if s.error),
            hit_step_limit=result.finish_reason == "max_steps",
        )


def summarize(answers: list[Answered], refs: list[str]) -> dict[str, Any]:
    """Success (with CI), loose success, cost; tool figures are all 0 on the RAG side by construction."""
    n = len(answers)
    # An agent stopped at the step limit has no answer: its "could not finish within 5 steps" must not score.
    pairs = [(a.answer if not a.hit_step_limit else "", r) for a, r in zip(answers, refs, strict=True)]
    primary = [success(a, r) for a, r in pairs]
    ci = bootstrap_ci(primary)
    return {
        "n": n,
        "success": ci["mean"],
        "success_ci95": [ci["low"], ci["high"]],
        "loose_success": sum(loose_success(a, r) for a, r in pairs) / n,
        "mean_steps": sum(a.steps for a in answers) / n,
        "mean_tool_calls": sum(a.tool_calls for a in answers) / n,
        "used_calculator": sum("calculator" in a.tools_used for a in answers) / n,
        "used_search": sum("search" in a.tools_used for a in answers) / n,
        "tool_errors": sum(a.tool_errors for a in answers),
        "hit_step_limit": sum(a.hit_step_limit for a in answers) / n,
        "s_per_question": sum(a.seconds for a in answers) / n,
        "scores": primary,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the first 10 questions")
    ap.add_argument("--limit", type=int, default=None, help="the first N questions")
    ap.add_argument("--max-steps", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--index", type=Path, default=Path(tempfile.gettempdir()) / "tailorlm-xquad-agent-index")
    ap.add_argument("--traces", type=Path, default=None, help="folder for agent traces (default: a new temp dir)")
    ap.add_argument(
        "--first-call",
        choices=["auto", "required"],
        default="auto",
        help="required: the agent's first turn is constrained to a valid tool call (runs both sides on hf)",
    )
    args = ap.parse_args()
    console = Console(stderr=True)

    from tailorlm.core.system import System
    from tailorlm.models.build import build_engine

    rows = load_questions(QUESTIONS, DOCS)
    limit = args.limit or (10 if args.quick else None)
    rows = rows[:limit] if limit else rows
    refs = [r["reference"] for r in rows]
    start = time.perf_counter()
    index = open_index(args.index)
    index_s = time.perf_counter() - start
    engine = build_engine(System(engine="hf" if args.first_call == "required" else "auto"))
    traces = args.traces or Path(tempfile.mkdtemp(prefix="tailorlm-agent-traces-"))
    traces.mkdir(parents=True, exist_ok=True)
    console.print(f"{len(rows)} questions · index {index} ({index_s:.0f}s) · traces in {traces}")

    rag_side = RagSide(engine, index, args.max_new_tokens)
    agent_side = AgentSide(engine, index, args.max_steps, args.max_new_tokens)
    agent_side.first_call = args.first_call
    rag_answers: list[Answered] = []
    agent_answers: list[Answered] = []
    # Interleaved, question by question: a load change on a shared machine then slows both sides alike.
    with (traces / "rag.jsonl").open("w", encoding="utf-8") as rag_log:
        for n, row in enumerate(rows):
            rag_answers.append(rag_side.answer(row["input"]))
            rag_log.write(json.dumps({**row, "answer": rag_answers[-1].answer}, ensure_ascii=False) + "\n")
            agent_answers.append(agent_side.answer(row, traces / f"q{n:02d}.json"))
            console.print(
                f"{n + 1}/{len(rows)} · rag: {rag_answers[-1].answer[:60]!r} · agent: "
                f"{agent_answers[-1].answer[:60]!r} · reference {row['reference']}",
                markup=False,
            )
    rag = summarize(rag_answers, refs)
    agent = summarize(agent_answers, refs)
    diff = paired_bootstrap(agent["scores"], rag["scores"])

    table = Table(title=f"XQuAD retrieval + arithmetic, {len(rows)} questions, default model")
    for col in ("", "success (last number)", "95% CI", "loose (any number)", "steps", "tool calls", "s/question"):
        table.add_column(col, justify="right")
    for name, s in (("rag, no tools", rag), ("ReAct agent", agent)):
        table.add_row(
            name,
            f"{s['success']:.3f}",
            f"[{s['success_ci95'][0]:.3f}, {s['success_ci95'][1]:.3f}]",
            f"{s['loose_success']:.3f}",
            f"{s['mean_steps']:.2f}",
            f"{s['mean_tool_calls']:.2f}",
            f"{s['s_per_question']:.1f}",
        )
    console.print(table)
    console.print(
        f"agent − rag: {diff['diff']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}], p={diff['p_value']:.3f} · "
        f"agent used calculator {agent['used_calculator']:.0%}, search {agent['used_search']:.0%}, "
        f"hit the step limit {agent['hit_step_limit']:.0%}, {agent['tool_errors']} failed calls · traces: {traces}"
    )
    for s in (rag, agent):
        del s["scores"]
    for key in ("mean_steps", "mean_tool_calls", "used_calculator", "used_search", "tool_errors", "hit_step_limit"):
        del rag[key]  # one model turn, no tools: nothing to report
    print(
        json.dumps(
            {
                "benchmark": "agent_xquad",
                "machine": machine(),
                "questions": len(rows),
                "primary": "success (last number matches)",
                "max_steps": args.max_steps,
                "max_new_tokens": args.max_new_tokens,
                "rag": rag,
                "agent": agent,
                "diff": diff,
                "ratio": agent["success"] / rag["success"] if rag["success"] else None,
                "traces": str(traces),
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
