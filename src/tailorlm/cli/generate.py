"""`tailor generate` (one-shot answers) and `tailor chat` (interactive, streamed)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from tailorlm.cli._common import ENGINE_HELP, console, err_console, print_json, with_engine
from tailorlm.core.system import PromptSpec, System
from tailorlm.errors import ConfigError
from tailorlm.models.build import build_engine
from tailorlm.models.engines.base import GenerationParams
from tailorlm.prompting.program import render_messages

MODEL_HELP = 'Model: "default" (packaged SmolLM2-135M-Instruct), a local HF folder, or a hub id.'
SYSTEM_HELP = "A System to answer with: a system.yaml or the folder (e.g. a run's artifacts) holding one."


def open_system(model: str | None, system: Path | None, system_prompt: str | None = None) -> System:
    """The System a command runs: from ``--system``, or a bare model wrapped in a default System."""
    if model and system:
        raise ConfigError("give either --model or --system, not both")
    sys_ = System.load(system) if system else System(name=model or "default", model=model or "default")
    if sys_.agent is not None and sys_.agent.first_call == "required" and sys_.engine == "auto":
        sys_ = sys_.model_copy(update={"engine": "hf"})  # a constrained first call needs transformers' logits hook
    if system_prompt is not None:
        prompt = (sys_.prompt or PromptSpec()).model_copy(update={"system": system_prompt})
        sys_ = sys_.model_copy(update={"prompt": prompt})
    return sys_


def _params(
    base: GenerationParams,
    max_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    seed: int | None,
    stop: list[str] | None,
) -> GenerationParams:
    update = {
        "max_new_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
        "stop": stop or None,
    }
    return GenerationParams.model_validate({**base.model_dump(), **{k: v for k, v in update.items() if v is not None}})


def generate(
    prompts: list[str] = typer.Argument(None, help="Questions to answer; read one per line from stdin if none."),
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    system: Path = typer.Option(None, "--system", "-s", help=SYSTEM_HELP),
    system_prompt: str = typer.Option(None, "--system-prompt", help="Override the system message."),
    max_tokens: int = typer.Option(None, "--max-tokens", help="Max new tokens (default from the System: 256)."),
    temperature: float = typer.Option(None, "--temperature", "-t", help="0 = greedy (default)."),
    top_p: float = typer.Option(None, "--top-p"),
    seed: int = typer.Option(None, "--seed", help="Seed for sampling."),
    stop: list[str] = typer.Option(None, "--stop", help="Stop string (repeatable)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Prompts generated together (hf engine)."),
    engine: str = typer.Option(None, "--engine", help=ENGINE_HELP),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, float32, bfloat16 or float16."),
    as_json: bool = typer.Option(False, "--json", help="Print completions as JSON."),
    json_schema: Path = typer.Option(None, "--json-schema", help="Answer with JSON valid against this schema file."),
    regex: str = typer.Option(None, "--regex", help="Answer with text matching this regular expression."),
    choice: list[str] = typer.Option(None, "--choice", help="Answer with one of these (repeatable)."),
) -> None:
    """Answer one or more prompts with a model or a System. Prompts are batched."""
    if not prompts:
        if sys.stdin.isatty():
            raise ConfigError("no prompt given", hint='tailor generate "What is the capital of France?"')
        prompts = [line.strip() for line in sys.stdin if line.strip()]
    sys_ = with_engine(open_system(model, system, system_prompt), engine)
    params = _params(sys_.generation, max_tokens, temperature, top_p, seed, stop)
    constraint = _constraint(json_schema, regex, choice)
    if constraint is not None:
        params = params.model_copy(update={"constraint": constraint})
        if sys_.engine == "auto":  # constrained decoding needs transformers' logits hook
            sys_ = sys_.model_copy(update={"engine": "hf"})
    with err_console.status(f"loading {escape(sys_.model)}…"):
        engine = build_engine(sys_, device=device, dtype=dtype, batch_size=batch_size)
    if sys_.agent is not None:
        _agent_generate(sys_, engine, prompts, params, as_json)
        return
    contexts = _rag_contexts(sys_, engine, prompts)
    inputs = [c.input if c else p for p, c in zip(prompts, contexts, strict=True)]
    todo = [i for i, c in enumerate(contexts) if not (c and c.abstain)]
    requests = [render_messages(sys_.prompt, inputs[i]) for i in todo]
    with Progress(
        TextColumn("generating"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=len(prompts) < 2,
    ) as bar:
        task = bar.add_task("generate", total=len(prompts))
        generated = engine.generate(requests, params, on_progress=lambda n: bar.advance(task, n))
    completions = _with_abstentions(sys_, contexts, todo, generated)
    if as_json:
        rows = []
        for p, c, ctx in zip(prompts, completions, contexts, strict=True):
            row = {"prompt": p, **c.model_dump()}
            if ctx is not None:
                row["citations"] = [x.as_json() for x in ctx.citations(c.text)]
                row["sources"], row["abstained"] = ctx.sources_json(), ctx.abstain
            rows.append(row)
        print_json(rows)
        return
    if len(prompts) == 1:
        console.print(completions[0].text, markup=False, highlight=False)
        if contexts[0] is not None:
            _print_citations(contexts[0], completions[0].text)
        return
    table = Table(show_lines=True)
    for col in ("prompt", "answer", "tokens", "finish"):
        table.add_column(col, overflow="fold")
    for p, c in zip(prompts, completions, strict=True):
        table.add_row(escape(p), escape(c.text), str(c.usage.completion_tokens), c.finish_reason)
    console.print(table)


def chat(
    model: str = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    system: Path = typer.Option(None, "--system", "-s", help=SYSTEM_HELP),
    system_prompt: str = typer.Option(None, "--system-prompt", help="Override the system message."),
    max_tokens: int = typer.Option(None, "--max-tokens"),
    temperature: float = typer.Option(None, "--temperature", "-t"),
    top_p: float = typer.Option(None, "--top-p"),
    seed: int = typer.Option(None, "--seed"),
    device: str = typer.Option("auto", "--device"),
    dtype: str = typer.Option("auto", "--dtype"),
    engine: str = typer.Option(None, "--engine", help=ENGINE_HELP),
) -> None:
    """Chat with a model or a System; answers stream as they are generated. /reset clears, /exit quits."""
    sys_ = with_engine(open_system(model, system, system_prompt), engine)
    params = _params(sys_.generation, max_tokens, temperature, top_p, seed, None)
    with err_console.status(f"loading {escape(sys_.model)}…"):
        engine = build_engine(sys_, device=device, dtype=dtype)
    err_console.print(f"[dim]chatting with {escape(sys_.name)} — /reset clears the history, /exit quits[/]")
    history: list[dict[str, str]] = []
    interactive = sys.stdin.isatty()
    while True:
        try:
            line = console.input("[bold cyan]you>[/] ") if interactive else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            break
        if not interactive and not line:
            break  # end of piped input
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit"):
            break
        if line == "/reset":
            history.clear()
            err_console.print("[dim]history cleared[/]")
            continue
        # RAG: this turn carries its sources; the history keeps only the plain question, so old sources do
        # not crowd the window.
        ctx = _rag_contexts(sys_, engine, [line])[0]
        turn = ctx.input if ctx and not ctx.abstain else line
        # The prompt program shapes the first turn (system message, few-shot); later turns append to history.
        messages = render_messages(sys_.prompt, turn) if not history else [*history, {"role": "user", "content": turn}]
        if sys_.agent is not None:
            result = _agent_turn(sys_, engine, messages, params)
            console.print(f"[bold green]assistant>[/] {escape(result.answer)}")
            messages[-1] = {"role": "user", "content": line}
            history = [*messages, {"role": "assistant", "content": result.answer}]
            continue
        console.print("[bold green]assistant>[/] ", end="")
        answer = ""
        if ctx is not None and ctx.abstain:
            answer = sys_.retriever.abstain_message if sys_.retriever else ""
            console.print(answer, end="", markup=False, highlight=False)
        else:
            for chunk in engine.stream(messages, params):
                answer += chunk.text
                console.print(chunk.text, end="", markup=False, highlight=False)
        console.print()
        if ctx is not None:
            _print_citations(ctx, answer)
        messages[-1] = {"role": "user", "content": line}
        history = [*messages, {"role": "assistant", "content": answer}]


def _constraint(json_schema: Path | None, regex: str | None, choices: list[str] | None) -> Any:
    """The constraint the options ask for (at most one), or None."""
    given = [x for x in (json_schema, regex, choices) if x]
    if len(given) > 1:
        raise ConfigError("give one of --json-schema, --regex and --choice")
    if not given:
        return None
    from tailorlm.tools.constrain import Constraint

    if json_schema is not None:
        import json

        try:
            schema = json.loads(json_schema.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ConfigError(f"{json_schema}: not a readable JSON schema ({err})") from None
        return Constraint(type="json_schema", schema=schema)
    if regex is not None:
        return Constraint(type="regex", pattern=regex)
    return Constraint(type="choice", choices=list(choices or []))


def _agent_generate(system: System, engine: Any, prompts: list[str], params: GenerationParams, as_json: bool) -> None:
    """An agent System answers each prompt in its own loop of model turns and tool calls."""
    rows = []
    for p in prompts:
        result = _agent_turn(system, engine, render_messages(system.prompt, p), params)
        rows.append({"prompt": p, "text": result.answer, "steps": result.steps, "tool_calls": result.tool_calls,
                     "finish_reason": result.finish_reason, "trace": result.trace.to_json()})  # fmt: skip
        if not as_json:
            console.print(result.answer, markup=False, highlight=False)
    if as_json:
        print_json(rows)


def _agent_turn(system: System, engine: Any, messages: list[dict[str, Any]], params: GenerationParams) -> Any:
    """One agent answer, its trace shown as it happens: each model turn's thought and calls, each tool's result."""
    from tailorlm.tools.agent import run_agent
    from tailorlm.tools.registry import agent_registry

    spec = system.agent
    assert spec is not None

    def show(step: Any) -> None:
        if step.kind == "model":
            for call in step.outputs.get("calls", []):
                thought = step.outputs.get("text", "").split("<tool_call>")[0].strip()
                if thought:
                    err_console.print(f"[dim]{escape(thought)}[/]")
                fn = call["function"]
                err_console.print(f"[cyan]→ {escape(fn['name'])}({escape(fn['arguments'])})[/]")
        else:
            shown = step.error or step.outputs.get("content", "")
            err_console.print(f"[dim]  = {escape(shown[:300])}  ({step.seconds:.2f} s)[/]")

    return run_agent(
        engine,
        messages,
        agent_registry(system),
        params=params,
        max_steps=spec.max_steps,
        timeout_s=spec.timeout_s,
        react=spec.react,
        first_call=spec.first_call,
        on_step=show,
    )


def _rag_contexts(system: System, engine: Any, prompts: list[str]) -> list[Any]:
    """Retrieved sources per prompt for a RAG System (None per prompt otherwise)."""
    if system.retriever is None:
        return [None] * len(prompts)
    from tailorlm.rag.answer import RagAnswerer

    answerer = RagAnswerer(system, tokenizer=getattr(engine, "tokenizer", None), engine=engine)
    return list(answerer.prepare(prompts))


def _with_abstentions(system: System, contexts: list[Any], todo: list[int], generated: list[Any]) -> list[Any]:
    from tailorlm.models.engines.base import Completion, Usage

    out: list[Any] = []
    it = iter(generated)
    for i in range(len(contexts)):
        if i in todo:
            out.append(next(it))
        else:
            message = system.retriever.abstain_message if system.retriever else ""
            out.append(Completion(text=message, finish_reason="stop", usage=Usage()))
    return out


def _print_citations(ctx: Any, answer: str) -> None:
    cited = ctx.citations(answer)
    shown = cited or []
    for c in shown:
        err_console.print(f"[dim][{c.n}] {escape(c.title or c.doc_id)} · {escape(c.source)} [{c.start}:{c.end}][/]")
    if not cited and ctx.shown:
        err_console.print(f"[dim]sources: {', '.join(escape(h.chunk.doc_id) for h in ctx.shown)}[/]")
