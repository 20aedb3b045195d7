"""What the rungs of one ladder share: the task, its settings, one loaded engine, the index, the training path.

Sharing is what keeps a ladder affordable on a CPU: the base model is loaded once for every prompt and RAG rung,
the documents are embedded once for every RAG rung, and the training examples are read once.
"""

from __future__ import annotations

import contextlib
import gc
import json
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tailorlm.core.io import atomic_write_json
from tailorlm.core.run import Run
from tailorlm.core.system import System
from tailorlm.core.task import Task
from tailorlm.eval.examples import Example
from tailorlm.ladder.config import LadderConfig
from tailorlm.ladder.rungs import Built
from tailorlm.ladder.training_data import TrainingData

# A context manager that shows training progress and yields the Trainer callbacks that drive it.
TrainingDisplay = Callable[[], AbstractContextManager[list[Any]]]


@contextlib.contextmanager
def _no_display() -> Iterator[list[Any]]:
    yield []


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc ``malloc_trim``), so that the next rung's peak
    resident memory is its own and not what an earlier rung's tensors left in the allocator."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: peaks may include memory an earlier rung freed


@dataclass
class IndexBuild:
    location: Path
    seconds: float  # what building it cost, the first time (reused builds report the original figure)
    chunks: int


@dataclass
class LadderContext:
    task: Task
    config: LadderConfig
    model: str
    dir: Path
    progress: bool = True
    training_display: TrainingDisplay | None = None
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict, repr=False)  # training rows per rung
    _engine: tuple[str, Any] | None = field(default=None, repr=False)
    _index: IndexBuild | None = field(default=None, repr=False)
    _training: TrainingData | None = field(default=None, repr=False)
    # Seconds this process spent on shared work (the index): the runner takes them out of the rung that happened
    # to trigger it and counts Built.shared_s in each rung that uses it instead.
    shared_spent_s: float = 0.0

    # --- engines -----------------------------------------------------------------------------------------------

    def with_engine(self, system: System) -> System:
        """``system`` answered by the ladder's engine (``ladder.engine``); a head System, and a System that names
        its own engine under ``ladder.engine: auto`` (constrained tool calls need hf), stay on their own."""
        cfg = self.config
        if system.head is not None or cfg.engine == "auto":
            return system
        return system.model_copy(update={"engine": cfg.engine, "engine_options": cfg.engine_options})

    def engine_for(self, system: System) -> Any:
        """One engine at a time, reused by every System with the same weights (prompt and retriever differ)."""
        from tailorlm.models.build import build_engine

        key = json.dumps(
            [system.model, [a.model_dump(mode="json") for a in system.adapters], system.engine,
             system.engine_options.model_dump(mode="json"), system.head is not None],
            sort_keys=True,
        )  # fmt: skip
        if self._engine is not None and self._engine[0] == key:
            return self._engine[1]
        self.release_engine()
        engine = build_engine(system, batch_size=self.config.batch_size)
        self._engine = (key, engine)
        return engine

    def release_engine(self) -> None:
        if self._engine is not None:
            self._engine = None
        release_memory()

    # --- data --------------------------------------------------------------------------------------------------

    def training(self) -> TrainingData:
        """The task's training records, read once, as every rung reads them (``ladder.training_data``)."""
        if self._training is None:
            from tailorlm.ladder.training_data import load_training

            self._training = load_training(self.task)
        return self._training

    def train_examples(self) -> list[Example]:
        """The training records read as the eval set is read (through ``train.fields`` and the task's template).

        Chat records (OpenAI, ShareGPT, Alpaca) count too: the first user turn is the input, as the user wrote it,
        and the last assistant turn the reference.
        """
        return self.training().examples

    def train_path(self) -> Path:
        """The training file, for messages."""
        return self.task.resolve(self.task.train.path) if self.task.train else Path("train")

    def index(self) -> IndexBuild:
        """The task's documents, ingested once into ``<ladder>/index`` (incremental: unchanged documents are kept)."""
        if self._index is not None:
            return self._index
        from tailorlm.rag.index import Index, IndexConfig
        from tailorlm.rag.ingest import IngestReport, ingest
        from tailorlm.rag.readers import ReaderOptions

        docs = self.task.documents
        assert docs is not None
        location = self.dir / "index"
        record = self.dir / "index.json"
        config = IndexConfig()
        if self.config.rag.chunk_tokens:
            config.chunking.max_tokens = self.config.rag.chunk_tokens
            config = IndexConfig.model_validate(config.model_dump())
        options = ReaderOptions(include=list(docs.include), exclude=list(docs.exclude))
        previous = json.loads(record.read_text()) if record.is_file() else None
        queries = self._tune_queries()
        tune_key = (
            _tune_key(queries, self.task.resolve(docs.path), list(docs.include), list(docs.exclude), self.config.rag)
            if queries
            else None
        )
        start = time.perf_counter()
        tuned = False
        if tune_key is not None and (previous or {}).get("tune_key") != tune_key:
            self._tune_index(location, config, queries, options)
            tuned = True
        # A tuned index carries its own chunking: open it with its config, not the defaults. An index left by a
        # tuned run when tuning is now off (or impossible) is rebuilt with the defaults.
        own = tune_key is not None and (location / "index.yaml").is_file()
        if not own and (previous or {}).get("tune_key") and location.exists():
            shutil.rmtree(location)
        idx = Index.open(str(location), None if own else config, create=True)
        try:
            if tuned:  # the tuned build ingested every document just now
                report = IngestReport()
            else:
                report = ingest(idx, self.task.resolve(docs.path), options=options, sync=True, progress=self.progress)
            report.chunks = idx.store.count_chunks()  # the index's, not only this ingest's new ones
        finally:
            idx.close()
        seconds = time.perf_counter() - start
        self.shared_spent_s += seconds
        if tuned or report.added or report.updated or report.deleted or previous is None:
            atomic_write_json(record, {"seconds": seconds, "chunks": report.chunks, "tune_key": tune_key})
        else:
            seconds = float(previous["seconds"])  # reused: the build cost is what it cost to build
        self._index = IndexBuild(location=location, seconds=seconds, chunks=int(report.chunks))
        return self._index

    def _tune_queries(self) -> list[Any]:
        """The training questions with references, as retrieval queries (a seeded sample); none when tuning is off
        or there are too few to decide anything."""
        if not self.config.rag.tune or self.task.train is None:
            return []
        import random

        from tailorlm.ladder.training_data import gold_ids, question, reference_text
        from tailorlm.rag.evaluation import RetrievalQuery

        queries = []
        for ex in self.train_examples():
            ref = reference_text(ex)
            doc_ids, gold = gold_ids(ex)
            refs = [r for r in (ex.reference if isinstance(ex.reference, list) else [ref]) if r]
            if refs or gold or doc_ids:
                queries.append(RetrievalQuery(ex.id, question(ex), [str(r) for r in refs], doc_ids, gold))
        if len(queries) < 10:
            return []
        random.Random(self.task.seed).shuffle(queries)
        return queries[: self.config.rag.tune_questions]

    def _tune_index(self, location: Path, config: Any, queries: list[Any], options: Any) -> None:
        from tailorlm.rag.tune import TuneSpace, tune_index

        docs = self.task.documents
        assert docs is not None
        space = TuneSpace()
        if self.config.rag.chunk_tokens:  # the user fixed the chunk size: tune the rest
            space.chunkings = [(config.chunking.max_tokens, config.chunking.overlap_tokens)]
        tune_index(self.task.resolve(docs.path), queries, location, self.dir / "index-tune", base=config, space=space,
                   k=self.config.rag.top_k, reader_options=options, progress=self.progress)  # fmt: skip

    # --- training ----------------------------------------------------------------------------------------------

    def sft_recipe(self, name: str, data: Path, *, max_steps: int | None = None) -> Any:
        """The SFT recipe of a training rung (``max_steps`` and no canaries: the plan's calibration run)."""
        from tailorlm.core.task import TrainingCanarySpec
        from tailorlm.train.sft.config import DataSpec, SFTRecipe, Strategy, Training

        cfg = self.config.sft
        steps = max_steps or cfg.max_steps
        return SFTRecipe(
            name=f"ladder-{name}",
            model=self.model,
            data=DataSpec(path=str(data)),
            eval_fraction=0.0,  # the ladder's eval set judges the result; a dev split would only cost time
            strategy=Strategy(method=cfg.method),  # type: ignore[arg-type]
            training=Training(
                epochs=cfg.epochs, max_steps=steps, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                max_length=cfg.max_length, seed=self.task.seed,
                # The task's memory budget bounds training too: the micro-batch and checkpointing fit under it.
                memory_limit_gb=self.task.budgets.memory_gb,
                # checkpoints a killed ladder resumes from: about four per training
                save_steps=max(1, steps // 4) if steps else 25,
            ),
            # Whether a drop blocks a rung is the task's call (canaries.max_drop): a few dozen canary items
            # measure a drop to within about ±0.1, so a fixed 2-point gate would block on noise.
            canaries=TrainingCanarySpec(
                enabled=max_steps is None, limit=self.config.canary_limit, max_drop=self.task.canaries.max_drop
            ),
        )  # fmt: skip

    def train(self, name: str, records: list[dict[str, Any]], out: Path) -> Built:
        """LoRA (or ``ladder.sft.method``) SFT on ``records``; a killed training resumes from its last checkpoint."""
        recipe, fingerprint, resume_dir = self._training_recipe(name, records, out)
        self.release_engine()  # training loads its own copy of the model
        from tailorlm.train.sft.recipe import fit

        display = self.training_display or _no_display
        run = Run.reopen(resume_dir) if resume_dir is not None else self._new_training_run(recipe, fingerprint, out)
        with run, display() as callbacks:
            system = fit(recipe, run, resume=resume_dir is not None, callbacks=callbacks)
        metrics = json.loads((run.path / "metrics.json").read_text())
        return Built(
            system,
            tokens=int(metrics.get("tokens") or 0),
            runs=[str(run.path)],
            canaries=metrics.get("canaries"),
            detail={"training": float(metrics.get("train_seconds") or 0.0)},
            artifacts=[run.artifacts],
            notes=[
                f"{metrics.get('steps')} steps, train loss {metrics.get('train_loss', float('nan')):.3f}",
                *_memory_note(run.path),
            ],
        )

    def start_training(self, name: str, records: list[dict[str, Any]], out: Path, steps: int,
                       callbacks: list[Any]) -> bool:  # fmt: skip
        """The first ``steps`` optimizer steps of the rung's real training, ending in a checkpoint, for the plan to
        time: ``train`` later resumes from there (resume is exact), so calibrating a rung costs no training twice.

        False (nothing done) when a killed earlier training of the same recipe and data is already waiting to be
        resumed: the plan then times throwaway steps as before.
        """
        from transformers import TrainerCallback

        from tailorlm.train.sft.recipe import build_trainer

        recipe, fingerprint, resume_dir = self._training_recipe(name, records, out)
        if resume_dir is not None:
            return False

        class Pause(TrainerCallback):  # type: ignore[misc]
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                if state.global_step >= steps:
                    control.should_save = True  # the Trainer saves before it stops: the checkpoint train resumes
                    control.should_training_stop = True

        self.release_engine()
        run = self._new_training_run(recipe, fingerprint, out)
        try:
            trainer, *_ = build_trainer(recipe, run, [*callbacks, Pause()])
            trainer.train()
        except BaseException as err:
            run.finish("failed", f"{type(err).__name__}: {err}")
            raise
        run.finish("interrupted", f"paused after the plan's {steps} calibration steps; the ladder resumes it")
        return True

    def _training_recipe(self, name: str, records: list[dict[str, Any]], out: Path) -> tuple[Any, str, Path | None]:
        """The rung's SFT recipe on ``records`` (written to ``out/train.jsonl``), its fingerprint, and the run to
        resume, if any."""
        from tailorlm.rag.sft_data import write_jsonl

        data = write_jsonl(records, out / "train.jsonl")
        recipe = self.sft_recipe(name, data)
        fingerprint = _fingerprint(recipe, data)
        return recipe, fingerprint, _resumable(out / TRAINING_POINTER, fingerprint)

    def _new_training_run(self, recipe: Any, fingerprint: str, out: Path) -> Run:
        """A fresh training run in ``out/runs``, named by the pointer with the recipe and data it is for."""
        run = Run.create(recipe.name, root=out / "runs", config=recipe, seed=self.task.seed, kind="sft")
        atomic_write_json(out / TRAINING_POINTER, {"run": str(run.path), "fingerprint": fingerprint})
        return run


TRAINING_POINTER = "training-run.json"


def _fingerprint(recipe: Any, data: Path) -> str:
    """What a training run was started for: a pointer to a run of another recipe or other data is not resumed."""
    import hashlib

    digest = hashlib.sha256(recipe.model_dump_json().encode())
    digest.update(data.read_bytes())
    return digest.hexdigest()[:16]


def _memory_note(run_dir: Path) -> list[str]:
    """The training's memory plan in words (micro-batch, checkpointing and why), for the rung's notes."""
    from tailorlm.train.sft.recipe import MEMORY_PLAN

    plan = run_dir / MEMORY_PLAN
    return [f"memory: {json.loads(plan.read_text())['reason']}"] if plan.is_file() else []


def _resumable(pointer: Path, fingerprint: str) -> Path | None:
    """The training run a killed ladder (or the plan) left behind for this recipe and data, if it has a checkpoint
    to resume from."""
    if not pointer.is_file():
        return None
    saved = json.loads(pointer.read_text())
    run_dir = Path(saved["run"])
    if saved.get("fingerprint") != fingerprint:
        if run_dir.parent == pointer.parent / "runs":  # a stale rung's training: nothing will resume it
            shutil.rmtree(run_dir, ignore_errors=True)
        return None
    from tailorlm.train.sft.recipe import CHECKPOINT_DIR, latest_checkpoint

    if run_dir.is_dir() and latest_checkpoint(run_dir / CHECKPOINT_DIR) is not None:
        return run_dir
    return None


def _tune_key(queries: list[Any], docs: Path, include: list[str], exclude: list[str], rag: Any) -> str:
    """What decides whether a tuned index is still right: the questions, the documents' bytes and the settings."""
    import hashlib

    from tailorlm.ladder.cache import path_fingerprint

    h = hashlib.sha256(json.dumps([[q.question, q.answers, q.doc_ids, q.gold] for q in queries]).encode())
    h.update(json.dumps([path_fingerprint(docs, include, exclude), rag.top_k, rag.chunk_tokens]).encode())
    return h.hexdigest()[:16]
