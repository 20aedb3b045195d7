"""`tailor data`: validate a dataset file, list the formats tailorlm reads, augment and convert data, make pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from tailorlm.cli._common import console, print_json
from tailorlm.core.safe_text import safe_cell
from tailorlm.data import DEFAULT_MAX_RECORD_BYTES, FORMATS, KINDS, load_dataset
from tailorlm.data.issues import RECORD, Issue, IssueLog
from tailorlm.data.load import Dataset
from tailorlm.data.stats import describe, record_lengths, summarize
from tailorlm.errors import DataError, TailorError

app = typer.Typer(help="Validate datasets and list the formats tailorlm reads.", no_args_is_help=True)


def _field_options(fields: list[str]) -> dict[str, str]:
    """``["input=question"]`` → ``{"input_field": "question"}``."""
    options = {}
    for item in fields:
        key, sep, column = item.partition("=")
        if not sep or not key or not column:
            raise DataError(f"--field expects KEY=COLUMN (e.g. input=question), got {item!r}")
        options[f"{key.strip()}_field"] = column.strip()
    return options


def _load_tokenizer(spec: str) -> Any:
    # Imported here: loading transformers costs a second, and `--tokenizer none` should not pay it.
    try:
        from tailorlm.models.load import load_tokenizer

        return load_tokenizer(spec)
    except Exception as err:  # any failure here is "no token statistics", and the user must see why
        reason = err.message if isinstance(err, TailorError) else f"{type(err).__name__}: {err}"
        raise TailorError(
            f"could not load tokenizer {spec!r} for token statistics: {reason}",
            hint="pass --tokenizer PATH (a HF model folder) or --tokenizer none to skip token statistics",
        ) from err


def _record_lines(
    dataset: Dataset, path: Path, max_record_bytes: int, columns: list[str] | None
) -> list[tuple[str, int]]:
    """The file and line of each record. Records keep no line numbers, but a load that raised no issue made exactly one
    record per row, in order: reading the rows again gives their lines."""
    from tailorlm.data.readers import container_for, read_rows

    numbered = [(str(path), i) for i in range(1, len(dataset) + 1)]
    container = container_for(path)
    if container is None:
        return numbered
    rows = read_rows(path, container, IssueLog(), max_record_bytes=max_record_bytes, columns=columns)
    places = [(r.path, r.line) for r in rows]
    # Cannot differ after a strict load; if it ever did, number the records rather than point at wrong lines.
    return places if len(places) == len(dataset) else numbered


def _check_lengths(
    dataset: Dataset, lengths: list[int], max_tokens: int, path: Path, max_record_bytes: int, columns: list[str] | None
) -> None:
    """A ``DataError`` naming file:line of every record longer than ``max_tokens``: a trainer would cut it, and a
    preference pair cut inside its answers compares two truncated texts."""
    over = [i for i, n in enumerate(lengths) if n > max_tokens]
    if not over:
        return
    what = {"preference": "prompt + longer answer", "binary": "prompt + completion"}.get(dataset.kind, "record")
    places = _record_lines(dataset, path, max_record_bytes, columns)
    issues = [Issue(*places[i], RECORD, f"{what}: {lengths[i]} tokens, over --max-tokens {max_tokens}") for i in over]
    raise DataError(
        f"{path}: {len(over)} of {len(dataset)} record(s) longer than {max_tokens} tokens",
        issues=issues,
        hint="drop or shorten them, or raise --max-tokens to the trainer's max_length",
    )


def _fmt(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, float) else str(value)


@app.command("validate")
def validate(
    file: Path = typer.Argument(..., help="A .jsonl/.json/.csv/.tsv/.parquet/.txt file, or a folder of .txt/.md."),
    format: str | None = typer.Option(None, "--format", "-f", help="Skip detection: " + ", ".join(FORMATS) + "."),
    kind: str | None = typer.Option(None, "--kind", "-k", help="Restrict to one kind: " + ", ".join(KINDS) + "."),
    tokenizer: str = typer.Option(
        "default",
        "--tokenizer",
        "-t",
        "--model",
        help="Tokenizer (of this model) for token statistics and --max-tokens: default, a HF folder, or none.",
    ),
    max_tokens: int | None = typer.Option(
        None,
        "--max-tokens",
        min=1,
        help="Records longer than this are an issue (pairs: prompt + the longer answer, chat-templated).",
    ),
    max_record_bytes: int = typer.Option(DEFAULT_MAX_RECORD_BYTES, help="Records larger than this are an issue."),
    extra: str = typer.Option("forbid", help="Unknown keys: forbid (an issue), ignore, or metadata (eval only)."),
    field: list[str] = typer.Option([], "--field", help="Map a column onto a canonical key: KEY=COLUMN, repeatable."),
    columns: str | None = typer.Option(None, help="Comma-separated column names for a CSV/TSV without a header."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object instead of a table."),
) -> None:
    """Check every record of FILE; print each problem as file:line: field: message, or a summary if all is well."""
    column_names = [c.strip() for c in columns.split(",")] if columns else None
    dataset = load_dataset(
        file,
        format,  # type: ignore[arg-type]  # load_dataset checks the name and lists the choices
        kind=kind,  # type: ignore[arg-type]
        max_record_bytes=max_record_bytes,
        extra=extra,  # type: ignore[arg-type]
        columns=column_names,
        **_field_options(field),
    )
    tok = None if tokenizer.lower() == "none" else _load_tokenizer(tokenizer)
    report = describe(dataset)
    if max_tokens is not None and tok is None:
        raise DataError("--max-tokens counts tokens: it needs a tokenizer", hint="pass --model SPEC instead of none")
    if tok is not None:
        lengths = record_lengths(dataset.records, tok)  # once, for both the statistics and the length check
        report["tokens"] = summarize(lengths)
        if max_tokens is not None:
            _check_lengths(dataset, lengths, max_tokens, file, max_record_bytes, column_names)
    if as_json:
        print_json(report)
        return
    table = Table(title="dataset is valid", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key in ("path", "format", "kind", "records", "labels", "fingerprint", "content_sha256"):
        if key in report:
            table.add_row(key, safe_cell(report[key]))  # the path is the user's: no markup, no raw ESC
    if tokens := report.get("tokens"):
        table.add_row("tokens", "  ".join(f"{k} {_fmt(v)}" for k, v in tokens.items() if k != "count"))
    console.print(table)


@app.command("formats")
def formats(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the dataset formats tailorlm reads, with their keys."""
    rows = [
        {
            "format": s.name,
            "kind": s.kind,
            "required": list(s.required),
            "optional": list(s.optional),
            "description": s.description,
        }
        for s in FORMATS.values()
    ]
    if as_json:
        print_json(rows)
        return
    table = Table("format", "kind", "description")
    for r in rows:
        table.add_row(r["format"], r["kind"], r["description"])
    console.print(table)
    console.print(
        "Containers: .jsonl/.ndjson/.json (list), .csv, .tsv, .parquet, .txt/.md and folders; .gz is read too."
    )


@app.command("augment")
def augment(
    file: Path = typer.Argument(..., help="Chat (OpenAI/ShareGPT/Alpaca) or text records to augment."),
    out: Path = typer.Option(..., "--out", "-o", help="Output JSONL: the originals, then the tagged augmentations."),
    method: str = typer.Option(..., "--method", "-m", help="paraphrase, backtranslate or synonym."),
    system: Path = typer.Option(None, "--system", help="System (folder or system.yaml) that rewrites the texts."),
    engine: str = typer.Option(None, "--engine", help="Or a model for the rewrites: default, a HF folder, a hub id."),
    n: int = typer.Option(1, "--n", min=1, help="Augmented copies per record."),
    targets: str = typer.Option("user", "--targets", help="Turns to rewrite: user, assistant or all."),
    seed: int = typer.Option(0, "--seed", help="Seed for synonym choices and sampling."),
    rate: float = typer.Option(0.1, "--rate", min=0.0, max=1.0, help="synonym: share of words replaced (EDA α)."),
    pivot: str = typer.Option("French", "--pivot", help="backtranslate: the pivot language."),
    temperature: float = typer.Option(0.7, "--temperature", min=0.0, help="Sampling temperature of the rewrites."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", min=1, help="Longest rewrite, in tokens."),
    no_originals: bool = typer.Option(False, "--no-originals", help="Write only the augmentations."),
) -> None:
    """Write OUT with N augmented copies of every record, tagged metadata.augmented = {method, source_id}.

    Train on OUT as usual: the eval split keeps augmented records out of eval, and drops those of eval records.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tailorlm.cli._common import err_console
    from tailorlm.data.augment import METHODS, augment, write_jsonl

    if method not in METHODS:
        raise DataError(f"unknown --method {method!r}", hint=f"choose one of: {', '.join(METHODS)}")
    if targets not in ("user", "assistant", "all"):
        raise DataError(f"unknown --targets {targets!r}", hint="choose one of: user, assistant, all")
    dataset = load_dataset(file)
    rewriter, params = None, None
    if method != "synonym":
        from tailorlm.core.system import System
        from tailorlm.models.build import build_engine
        from tailorlm.models.engines.base import GenerationParams

        if system is None and engine is None:
            raise DataError(f"--method {method} needs a model", hint="pass --system SYSTEM or --engine default")
        rewriter = build_engine(System.load(system) if system else System(model=engine))
        params = GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=0.95)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
    )
    with progress:
        bar = progress.add_task(f"{method}", total=len(dataset) * n)
        result = augment(
            dataset,
            method,  # type: ignore[arg-type]  # checked against METHODS above
            engine=rewriter,
            n=n,
            seed=seed,
            targets=targets,  # type: ignore[arg-type]
            rate=rate,
            pivot=pivot,
            params=params,
            keep_originals=not no_originals,
            on_progress=lambda k: progress.advance(bar, k),
        )
    write_jsonl(result.dataset, out)
    table = Table(title=f"augmented · {method}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("input", f"{safe_cell(file)} ({len(dataset)} records)")
    table.add_row("made", str(result.made))
    table.add_row("skipped", "  ".join(f"{k} {v}" for k, v in result.skipped.items()))
    table.add_row("output", f"{safe_cell(out)} ({len(result.dataset)} records)")
    console.print(table)


@app.command("convert-bfcl")
def convert_bfcl(
    questions: Path = typer.Argument(..., help="A BFCL questions file, e.g. BFCL_v4_simple_python.json."),
    answers: Path | None = typer.Option(None, "--answers", help="Its possible_answer/ file (irrelevance needs none)."),
    to: str = typer.Option(..., "--to", help="eval (for tool_ast scoring) or chat (tool_calls, to train on)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output JSONL."),
    category: str | None = typer.Option(None, "--category", help="Category name; default: read from each id."),
    split: float | None = typer.Option(None, "--split", help="Write this fraction to OUT and the rest to --out-rest."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --split."),
    out_rest: Path | None = typer.Option(None, "--out-rest", help="Output JSONL for the questions --split leaves."),
    rest_to: str | None = typer.Option(None, "--rest-to", help="eval or chat for --out-rest; default: as --to."),
) -> None:
    """Convert BFCL function-calling data into eval or chat records that pass `tailor data validate`.

    Chat records take the first allowed value of each argument; an irrelevance question gets the answer
    "None of the available tools can do this." and no call. Data: Patil et al., gorilla (Apache-2.0).
    """
    import json

    from tailorlm.core.io import atomic_write_text
    from tailorlm.data.bfcl import convert_bfcl as convert

    if (split is None) != (out_rest is None):
        raise DataError("--split and --out-rest go together", hint="e.g. --split 0.75 --out-rest rest.jsonl")
    records, rest = convert(
        questions,
        answers,
        to,  # type: ignore[arg-type]  # convert_bfcl checks the name and lists the choices
        category=category,
        split=split,
        seed=seed,
        rest_to=rest_to,  # type: ignore[arg-type]
    )
    table = Table(title=f"converted · BFCL → {to}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("input", safe_cell(questions))
    for path, rows in ((out, records), (out_rest, rest)):
        if path is not None:
            atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            table.add_row("output", f"{safe_cell(path)} ({len(rows)} records)")
    console.print(table)


def _system(spec: str) -> Any:
    """A system.yaml, a folder holding one, or ``default`` (the packaged default model, no prompt program)."""
    from tailorlm.core.system import System

    if spec == "default" and not Path(spec).exists():
        return System(name="default")
    return System.load(spec)


@app.command("pairs")
def pairs(
    source: Path = typer.Argument(..., help="A task.yaml (its train: records) or a file of prompts."),
    system: str = typer.Option(
        ..., "--system", "-s", help="The System that answers: a folder, system.yaml or default."
    ),
    out: Path = typer.Option(Path("pairs.jsonl"), "--out", "-o", help="Output preference JSONL."),
    n: int = typer.Option(4, "--n", min=2, help="Answers sampled per prompt."),
    temperature: float = typer.Option(0.8, "--temperature", min=0.0, help="Sampling temperature (must be > 0)."),
    scorer: str = typer.Option("metric", "--scorer", help="Rank answers by: metric, judge or reward."),
    metric: str | None = typer.Option(
        None, "--metric", help="metric scorer: the metric; default: the task's primary."
    ),
    judge: str | None = typer.Option(None, "--judge", help="judge scorer: the judge System (folder, yaml, default)."),
    reward_model: Path | None = typer.Option(None, "--reward-model", help="reward scorer: a trained reward model."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", min=1, help="Default: the task's, else 256."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    field: list[str] = typer.Option(
        [], "--field", help="Map a column of the prompts file: KEY=COLUMN (input=prompt)."
    ),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="Leave out the prompts file's bad records (counted) instead of stopping."
    ),
) -> None:
    """Sample N answers per prompt, score them, and write best ≻ worst as preference pairs.

    Prompts whose answers all score the same give no pair and are counted. Rerun the same command to resume an
    interrupted run; OUT is written only when complete, with the scores beside it (NAME.scores.jsonl).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tailorlm.cli._common import err_console
    from tailorlm.data.pairs import build_pairs, load_prompts, make_scorer
    from tailorlm.eval.cache import system_cache_key
    from tailorlm.models.build import build_engine
    from tailorlm.models.engines.base import GenerationParams

    answerer = _system(system)
    prompts = load_prompts(source, answerer, skip_invalid=skip_invalid, **_field_options(field))
    items, task = prompts.items, prompts.task
    rank = make_scorer(
        scorer,
        system=answerer,
        task=task,
        metric=metric,
        judge=_system(judge) if judge else None,
        reward_model=reward_model,
    )
    base = task.generation if task else GenerationParams(max_new_tokens=256)
    params = base.model_copy(
        update={"temperature": temperature, "max_new_tokens": max_new_tokens or base.max_new_tokens}
    )
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
    )
    with progress:
        bar = progress.add_task(f"pairs · {scorer}", total=len(items))
        result = build_pairs(
            items,
            lambda: build_engine(answerer),
            rank,
            out=out,
            n=n,
            params=params,
            seed=seed,
            system_key=system_cache_key(answerer),
            on_progress=lambda k: progress.advance(bar, k),
        )
    table = Table(title=f"preference pairs · {scorer}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("prompts", f"{result.prompts} ({result.reused} from an earlier run)")
    if prompts.issues:
        first = safe_cell(prompts.issues[0])
        table.add_row("left out", f"{prompts.left_out} invalid record(s) of {safe_cell(source)}, e.g. {first}")
    table.add_row("pairs", f"{safe_cell(result.out)} ({result.pairs} records)")
    for reason, count in result.skipped.items():
        table.add_row("skipped", f"{count}: {safe_cell(reason)}")
    table.add_row("scores", safe_cell(result.scores_path))
    console.print(table)
