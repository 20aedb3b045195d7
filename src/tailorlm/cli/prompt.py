"""`tailor prompt render | eval | optimize`: prompt programs as Systems you can see and measure."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from tailorlm.cli._common import console, print_json
from tailorlm.core.config import load_config
from tailorlm.core.system import PromptSpec, System
from tailorlm.core.task import Task
from tailorlm.errors import ConfigError

app = typer.Typer(
    help="Prompt programs: render what the model sees, evaluate them, optimize them.", no_args_is_help=True
)

PROGRAM_HELP = "A prompt program YAML (system, template, few_shot, selection, chain_of_thought, answer, …)."


def load_system(program: Path | None, model: str, system: Path | None) -> System:
    """A System from ``--system``, or ``--model`` plus a prompt program file."""
    if system is not None:
        if program is not None:
            raise ConfigError("give either --system or --program, not both")
        return System.load(system)
    prompt = load_config(PromptSpec, program) if program else None
    name = program.stem if program else "zero-shot"
    return System(name=name, model=model, prompt=prompt)


@app.command("render")
def render(
    task: Path = typer.Option(..., "--task", "-t", help="task.yaml whose eval set supplies the input."),
    program: Path = typer.Option(None, "--program", "-p", help=PROGRAM_HELP),
    model: str = typer.Option("default", "--model", "-m", help="Model whose chat template renders the prompt."),
    system: Path = typer.Option(None, "--system", "-s", help="Render a saved System instead of a program."),
    index: int = typer.Option(0, "--index", "-i", help="Which eval example to render."),
    as_json: bool = typer.Option(False, "--json", help="Print the messages and the rendered text as JSON."),
) -> None:
    """Show exactly what the model sees for one eval example: messages, then the chat-templated text."""
    from tailorlm.eval.examples import build_examples
    from tailorlm.models.load import load_tokenizer
    from tailorlm.prompting.answerer import build_requests

    sys_ = load_system(program, model, system)
    examples, _ = build_examples(Task.load(task))
    if not 0 <= index < len(examples):
        raise ConfigError(f"--index {index} is out of range: the eval set has {len(examples)} examples")
    tokenizer = load_tokenizer(sys_.model)
    messages = build_requests(sys_.prompt, [examples[index].text], tokenizer)[0]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    n_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    if as_json:
        print_json({"messages": messages, "text": text, "tokens": n_tokens, "reference": examples[index].reference})
        return
    console.print(
        Panel(escape(text), title=f"{escape(sys_.name)} · example {index} · {n_tokens} tokens", expand=False)
    )
    console.print(f"reference: {escape(str(examples[index].reference))}", highlight=False)


@app.command("eval")
def eval_(
    task: Path = typer.Option(..., "--task", "-t"),
    program: Path = typer.Option(None, "--program", "-p", help=PROGRAM_HELP),
    model: str = typer.Option("default", "--model", "-m"),
    system: Path = typer.Option(None, "--system", "-s"),
    limit: int = typer.Option(None, "--limit", "-n"),
    batch_size: int = typer.Option(8, "--batch-size"),
    root: Path = typer.Option(Path("runs"), "--root"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Evaluate a prompt program (as a System) on a task; the run keeps the System for generate/chat/serve."""
    from tailorlm.cli.eval import print_result
    from tailorlm.eval.runner import EvalConfig, evaluate

    sys_ = load_system(program, model, system)
    config = EvalConfig(task=str(task), system=sys_.name, limit=limit, batch_size=batch_size)
    result = evaluate(sys_, Task.load(task), config=config, root=root, progress=not as_json)
    print_result(result, as_json)


@app.command("optimize")
def optimize(
    task: Path = typer.Option(..., "--task", "-t"),
    budget: int = typer.Option(8, "--budget", "-b", help="Candidate programs to evaluate on the dev split."),
    program: Path = typer.Option(None, "--program", "-p", help="Starting program (default: zero-shot)."),
    model: str = typer.Option("default", "--model", "-m"),
    k: int = typer.Option(4, "--k", help="Demonstrations per candidate."),
    pool_size: int = typer.Option(40, "--pool-size"),
    dev_size: int = typer.Option(40, "--dev-size"),
    test_size: int = typer.Option(None, "--test-size"),
    propose_with: str = typer.Option(None, "--propose-with", help="Model that proposes instruction rewrites."),
    seed: int = typer.Option(0, "--seed"),
    root: Path = typer.Option(Path("runs"), "--root"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Bootstrap few-shot + random search on a dev split; reports the held-out test score next to dev."""
    from tailorlm.prompting.optimize import OptimizeConfig, optimize_prompt

    cfg = OptimizeConfig(
        budget=budget,
        k=k,
        pool_size=pool_size,
        dev_size=dev_size,
        test_size=test_size,
        propose_with=propose_with,
        seed=seed,
    )
    result = optimize_prompt(load_system(program, model, None), Task.load(task), cfg, root=root, progress=not as_json)
    if as_json:
        print_json(
            {
                "run": str(result.run.path),
                "dev": result.dev,
                "test": result.test,
                "candidates": [{"name": c.name, "dev": c.dev, **c.meta} for c in result.candidates],
            }
        )
        return
    table = Table(title="candidates (dev split)")
    for col in ("candidate", "dev", "demos", "instruction"):
        table.add_column(col)
    for c in result.candidates:
        n = len(c.prompt.few_shot) if c.prompt else 0
        instr = (c.prompt.system or "—") if c.prompt else "—"
        table.add_row(c.name, f"{c.dev:.3f}", str(n), escape(instr[:60]))
    console.print(table)
    console.print(
        f"dev:  start {result.dev['start']:.3f} → best {result.dev['best']:.3f}\n"
        f"test: start {result.test['start']:.3f} → best {result.test['best']:.3f}  (held out: never used to choose)",
        highlight=False,
    )
    console.print(f"best System: {result.run.artifacts / 'system.yaml'}", highlight=False)
