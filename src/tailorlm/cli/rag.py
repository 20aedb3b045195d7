"""`tailor rag ingest | query | eval | tune | calibrate | make-sft-data | system`: build an index and use it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from tailorlm.cli._common import console, print_json
from tailorlm.errors import ConfigError, TailorError

app = typer.Typer(
    help="Retrieval-augmented generation: ingest documents, query, evaluate, build Systems.", no_args_is_help=True
)

INDEX_HELP = "Index: a directory (LanceDB, created if missing) or a postgresql:// URL (pgvector)."
OPTION_HELP = "Retrieval option KEY=VALUE (repeatable): dense_weight, lexical_weight, fusion, candidates, maxsim, …"


def _retrieval_overrides(items: list[str] | None) -> dict[str, Any]:
    """``-o dense_weight=0.7 -o fusion=rrf`` → validated RetrievalConfig overrides (unknown keys are errors)."""
    from pydantic import ValidationError

    from tailorlm.core.config import parse_override
    from tailorlm.rag.retrieval import RetrievalConfig

    out: dict[str, Any] = {}
    for item in items or []:
        parts, value = parse_override(item)
        out[".".join(parts)] = value
    try:
        RetrievalConfig.model_validate(out)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(x) for x in first["loc"])
        raise ConfigError(
            f"-o {key}: {first['msg']}", hint=f"retrieval options: {', '.join(RetrievalConfig.model_fields)}"
        ) from err
    return out


def _where(items: list[str] | None) -> dict[str, Any] | None:
    """``--where lang=en --where tag=a,b`` → {"lang": "en", "tag": ["a", "b"]}."""
    if not items:
        return None
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--where {item!r}: expected FIELD=VALUE or FIELD=V1,V2")
        key, value = item.split("=", 1)
        out[key.strip()] = value.split(",") if "," in value else value
    return out


@app.command("ingest")
def ingest_cmd(
    path: Path = typer.Argument(..., help="A file or folder of documents (txt, md, html, pdf, docx, jsonl, csv)."),
    index: str = typer.Option(..., "--index", "-i", help=INDEX_HELP),
    include: list[str] = typer.Option(None, "--include", help="Glob of files to read (repeatable)."),
    exclude: list[str] = typer.Option(None, "--exclude", help="Glob of files to skip (repeatable)."),
    sync: bool = typer.Option(False, "--sync", help="Remove indexed documents that are no longer under PATH."),
    strict: bool = typer.Option(False, "--strict", help="Exit non-zero if any file could not be read."),
    text_field: str = typer.Option("text", "--text-field", help="JSONL/CSV: the field holding the text."),
    id_field: str = typer.Option(None, "--id-field", help="JSONL/CSV: field with a stable record id (required)."),
    metadata_field: list[str] = typer.Option(None, "--metadata-field", help="JSONL/CSV: fields kept as metadata."),
    embedder: str = typer.Option(None, "--embedder", help="'default', a sentence-transformers folder, openai:MODEL."),
    backend: str = typer.Option(None, "--backend", help="Embedding backend: auto, onnx-int8, onnx, torch."),
    chunk_tokens: int = typer.Option(None, "--chunk-tokens", help="Max tokens per chunk (new index only)."),
    chunk_overlap: int = typer.Option(None, "--chunk-overlap", help="Overlap tokens between chunks (new index)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Read, chunk, embed and store documents. Unchanged documents are skipped; a killed run resumes."""
    from tailorlm.rag.index import Index, IndexConfig
    from tailorlm.rag.ingest import ingest
    from tailorlm.rag.readers import ReaderOptions

    config = None
    if any(v is not None for v in (embedder, backend, chunk_tokens, chunk_overlap)):
        config = IndexConfig()
        if embedder is not None:
            config.embedder.model = embedder
        if backend is not None:
            config.embedder.backend = backend  # type: ignore[assignment]
        if chunk_tokens is not None:
            config.chunking.max_tokens = chunk_tokens
        if chunk_overlap is not None:
            config.chunking.overlap_tokens = chunk_overlap
        config = IndexConfig.model_validate(config.model_dump())
    opts = ReaderOptions(text_field=text_field, metadata_fields=metadata_field or None)
    if id_field is not None:
        opts.id_field, opts.id_required = id_field, True
    if include:
        opts.include = list(include)
    if exclude:
        opts.exclude = list(exclude)
    idx = Index.open(index, config, create=True)
    try:
        report = ingest(idx, path, options=opts, sync=sync, progress=not quiet and not as_json)
    finally:
        idx.close()
    if as_json:
        print_json(report.as_json())
    else:
        console.print(
            f"[bold]{report.added}[/] added, {report.updated} updated, {report.unchanged} unchanged, "
            f"{report.deleted} deleted · {report.chunks} chunks in {report.seconds:.1f} s "
            f"({report.chunks_per_s:.0f} chunks/s) → {escape(index)}"
        )
        for p in report.problems:
            where = f"{p.path}:{p.line}" if p.line else p.path
            console.print(f"[yellow]skipped[/] {escape(where)}: {escape(p.message)}")
    if strict and report.problems:
        raise typer.Exit(1)


@app.command("query")
def query_cmd(
    question: str = typer.Argument(..., help="The question."),
    index: str = typer.Option(..., "--index", "-i", help=INDEX_HELP),
    k: int = typer.Option(5, "--k", "-k", help="Passages to return."),
    mode: str = typer.Option(None, "--mode", help="hybrid (default), dense or lexical."),
    where: list[str] = typer.Option(None, "--where", help="Metadata filter FIELD=VALUE[,VALUE] (repeatable)."),
    mmr: float = typer.Option(None, "--mmr", help="Diversify with MMR; lambda in [0, 1] (1 = relevance only)."),
    reranker: str = typer.Option(None, "--reranker", help="A CrossEncoder folder to rerank with."),
    option: list[str] = typer.Option(None, "--option", "-o", help=OPTION_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print hits as JSON (scores, spans, metadata)."),
) -> None:
    """Retrieve passages for a question."""
    from tailorlm.rag.index import Index

    overrides = _retrieval_overrides(option)
    idx = Index.open(index)
    if mode:
        overrides["mode"] = mode
    if mmr is not None:
        overrides["mmr_lambda"] = mmr
    if reranker:
        overrides["reranker"] = reranker
    try:
        hits = idx.retriever(**overrides).retrieve(question, k=k, where=_where(where))
    finally:
        idx.close()
    if as_json:
        print_json({"question": question, "hits": [h.as_json() for h in hits]})
        return
    table = Table(title=f"top {len(hits)} for: {escape(question)}", show_lines=True)
    for col in ("#", "score", "source", "passage"):
        table.add_column(col, overflow="fold")
    for h in hits:
        c = h.chunk
        where_ = f"{c.doc_id} [{c.start}:{c.end}]" + (f"\n{c.heading}" if c.heading else "")
        text = c.text if len(c.text) < 400 else c.text[:400] + " …"
        table.add_row(str(h.rank), f"{h.score:.3f}", escape(where_), escape(text))
    console.print(table)


@app.command("eval")
def eval_cmd(
    questions: Path = typer.Argument(..., help="JSONL of questions with gold (gold spans, doc_ids or answers)."),
    index: str = typer.Option(..., "--index", "-i", help=INDEX_HELP),
    k: list[int] = typer.Option(None, "--k", "-k", help="Cut-offs for recall@k and nDCG@k (repeatable)."),
    mode: str = typer.Option(None, "--mode", help="hybrid (default), dense or lexical."),
    limit: int = typer.Option(None, "--limit", help="Evaluate the first N questions."),
    option: list[str] = typer.Option(None, "--option", "-o", help=OPTION_HELP),
    out: Path = typer.Option(None, "--out", help="Write metrics and per-question results here (JSON)."),
    as_json: bool = typer.Option(False, "--json", help="Print metrics as JSON."),
) -> None:
    """Retrieval quality: recall@k, MRR and nDCG@k with 95% CIs, plus query latency.

    Answer quality (EM/F1, citation precision) comes from `tailor eval SYSTEM --task T` on a RAG System.
    """
    from tailorlm.core.io import atomic_write_json
    from tailorlm.rag.evaluation import evaluate_retrieval, load_queries
    from tailorlm.rag.index import Index

    queries = load_queries(questions)[:limit] if limit else load_queries(questions)
    overrides = _retrieval_overrides(option) | ({"mode": mode} if mode else {})
    idx = Index.open(index)
    try:
        result = evaluate_retrieval(
            idx.retriever(**overrides), queries, tuple(k or (1, 3, 5, 10)), progress=not as_json
        )
    finally:
        idx.close()
    if out:
        atomic_write_json(out, result)
    summary = {k: result[k] for k in ("n", "metrics", "latency_ms", "context_chars@5")}
    if as_json:
        print_json(summary)
        return
    table = Table(title=f"retrieval on {result['n']} questions")
    for col in ("metric", "value", "95% CI"):
        table.add_column(col)
    for name, m in result["metrics"].items():
        table.add_row(name, f"{m['value']:.3f}", f"[{m['low']:.3f}, {m['high']:.3f}]")
    console.print(table)
    lat = result["latency_ms"]
    console.print(
        f"query latency p50 {lat['p50']:.1f} ms · p95 {lat['p95']:.1f} ms · "
        f"{result['context_chars@5']:,.0f} characters in the top 5"
    )


@app.command("tune")
def tune_cmd(
    questions: Path = typer.Argument(..., help="JSONL of TRAINING questions with gold (never the eval set)."),
    docs: Path = typer.Option(..., "--docs", help="The documents to index (a file or folder)."),
    index: Path = typer.Option(..., "--index", "-i", help="Where the tuned index goes (a directory)."),
    k: int = typer.Option(5, "--k", "-k", help="Passages the answer step reads: the objective is recall@k."),
    max_chars_per_hit: int = typer.Option(
        2400, "--max-chars-per-hit", help="Cap on the mean characters per hit (wider windows always find more)."
    ),
    replace: bool = typer.Option(False, "--replace", help="Replace an index already at --index."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Search chunking, fusion, candidates, MMR and neighbour expansion on training questions; build the best index.

    The report (tune.md, tune.json) is written into the index folder; its index.yaml holds the tuned retrieval
    settings, which every query, eval and System on the index then uses.
    """
    from tailorlm.rag.evaluation import load_queries
    from tailorlm.rag.tune import TuneSpace, tune_index

    if not docs.exists():
        raise TailorError(f"documents not found: {docs}")
    if index.exists() and any(index.iterdir()) and not replace:
        raise TailorError(f"{index} already exists", hint="pass --replace to rebuild it tuned, or a new --index")
    queries = load_queries(questions)
    space = TuneSpace(max_chars_per_hit=max_chars_per_hit)
    result = tune_index(docs, queries, index, index / "tune", space=space, k=k, progress=not as_json)
    if as_json:
        print_json({key: v for key, v in result.as_json().items() if key != "trials"})
        return
    table = Table(title=f"retrieval tuned on {result.n_questions} questions ({result.seconds:.0f} s)")
    for col in ("", "chunking", "settings", f"recall@{k}", f"adjacent@{k}", f"chars in top {k}"):
        table.add_column(col)
    rows = [("default", result.default), ("tuned", result.best)]
    if result.search_best is not None and result.best is not result.search_best:
        rows.append(("search's best, not adopted", result.search_best))  # what the sign test turned down
    for label, t in rows:
        settings = ", ".join(f"{a}={b}" for a, b in t.settings.items()) or "defaults"
        table.add_row(label, t.chunking, escape(settings), f"{t.recall:.3f}", f"{t.recall_adjacent:.3f}",
                      f"{t.context_chars:,.0f}")  # fmt: skip
    console.print(table)
    if result.best is result.default:
        console.print(f"kept the defaults: the search's best gain could be luck (sign test p = {result.p_value:.3f})")
    console.print(f"→ {index} (report: {index / 'tune.md'})")


@app.command("calibrate")
def calibrate_cmd(
    questions: Path = typer.Argument(..., help="JSONL of answerable questions (with gold) for this index."),
    index: str = typer.Option(..., "--index", "-i", help=INDEX_HELP),
    keep: float = typer.Option(0.95, "--keep", help="Share of answerable questions that must not abstain."),
) -> None:
    """Suggest `min_score`: the best-passage similarity that keeps ``--keep`` of answerable questions answered,
    with the share of off-topic questions it would turn away."""
    import numpy as np

    from tailorlm.rag.calibration import OFF_TOPIC, best_scores
    from tailorlm.rag.evaluation import load_queries
    from tailorlm.rag.index import Index

    queries = load_queries(questions)
    idx = Index.open(index)
    try:
        retriever = idx.retriever()
        pos = best_scores(retriever, [q.question for q in queries])
        neg = best_scores(retriever, OFF_TOPIC)
    finally:
        idx.close()
    threshold = float(np.quantile(pos, 1 - keep))
    rejected = float(np.mean(np.array(neg) < threshold))
    print_json(
        {
            "min_score": round(threshold, 4),
            "answerable_kept": keep,
            "off_topic_abstained": rejected,
            "answerable_p50": float(np.median(pos)),
            "off_topic_p50": float(np.median(neg)),
        }
    )


@app.command("make-sft-data")
def make_sft_data_cmd(
    questions: Path = typer.Argument(
        None, help="JSONL of questions with answers; gold spans or doc_ids optional (else found by the answer)."
    ),
    index: str = typer.Option(..., "--index", "-i", help=INDEX_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Output JSONL of chat records."),
    distractors: int = typer.Option(3, "--distractors", help="Retrieved non-gold passages per record."),
    p_oracle: float = typer.Option(0.8, "--p-oracle", help="Share of records that include the gold passage."),
    no_oracle: str = typer.Option("reference", "--no-oracle", help="Answer without gold: reference or abstain."),
    seed: int = typer.Option(0, "--seed"),
    task: Path = typer.Option(
        None, "--task", help="Read the questions from this task's train: data, as the ladder does (train.fields)."
    ),
) -> None:
    """RAFT-style SFT data: each question with its gold passage among retrieved distractors, answer cited."""
    from tailorlm.rag.evaluation import load_queries
    from tailorlm.rag.index import Index
    from tailorlm.rag.sft_data import gold_summary, make_sft_records, write_jsonl

    if no_oracle not in ("reference", "abstain"):
        raise ConfigError(f"--no-oracle must be 'reference' or 'abstain', not {no_oracle!r}")
    if (questions is None) == (task is None):
        raise ConfigError("give a QUESTIONS file or --task TASK.yaml (its train: data), not both or neither")
    render = None
    if task is not None:
        from tailorlm.core.task import Task
        from tailorlm.ladder.training_data import load_training, raft_queries

        # The ladder's reader: the task's train.fields mapping (or a chat file), the questions through its template.
        data = load_training(Task.load(task))
        queries = raft_queries(data.examples, data.path)
        texts = {ex.id: ex.text for ex in data.examples}
        render = lambda q: texts.get(q.id, q.question)  # noqa: E731
    else:
        queries = load_queries(questions)
    idx = Index.open(index)
    try:
        records, counts = make_sft_records(
            idx.retriever(),
            queries,
            distractors=distractors,
            p_oracle=p_oracle,
            no_oracle=no_oracle,
            seed=seed,
            render=render,
        )  # type: ignore[arg-type]
    finally:
        idx.close()
    if not records:
        raise TailorError("no records written: no question had a retrievable gold passage", hint=json.dumps(counts))
    write_jsonl(records, out)
    console.print(f"wrote {counts['written']} records ({counts['with_oracle']} with the gold passage) → {out}")
    console.print(gold_summary(counts))
    skipped = counts["skipped_no_gold"] + counts["skipped_no_answer"]
    if skipped:
        console.print(f"[yellow]skipped {skipped}[/]: {json.dumps(counts)}")


@app.command("system")
def system_cmd(
    index: str = typer.Option(..., "--index", "-i", help=INDEX_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Folder (or .yaml file) to write the System to."),
    model: str = typer.Option("default", "--model", "-m", help="Base model."),
    base: Path = typer.Option(
        None, "--system", "-s", help="Start from a saved System (e.g. a RAFT fine-tune: its adapters and prompt)."
    ),
    k: int = typer.Option(5, "--k", "-k", help="Passages per question."),
    min_score: float = typer.Option(None, "--min-score", help="Abstain below this best-passage similarity."),
    name: str = typer.Option("rag", "--name", help="System name."),
) -> None:
    """Write a RAG System (model + retriever) for `tailor generate`, `tailor chat` and `tailor eval`."""
    from tailorlm.core.system import RetrieverSpec, System, is_postgres_url
    from tailorlm.rag.index import Index

    Index.open(index).close()  # fail now, not at first use, if the index is missing
    location = index if is_postgres_url(index) else str(Path(index).resolve())
    retriever = RetrieverSpec(index=location, top_k=k, min_score=min_score)
    if base is not None:
        parent = System.load(base)
        system = parent.model_copy(update={"name": name, "retriever": retriever, "parent": str(base)})
    else:
        system = System(name=name, model=model, retriever=retriever)
    path = system.save(out)
    console.print(f"wrote {path}")
