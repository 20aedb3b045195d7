"""Hyperparameter search over an SFT recipe with Optuna: ``tailor train sft RECIPE.yaml --search SPACE.yaml``.

    result = search("recipes/sft-lora.yaml", "recipes/search-lora.yaml", n_trials=20)
    result.best_system      # runs/<search>/best/system.yaml

Top to bottom: read the space (``search_space.py``) and check it against the recipe → open the search Run and its
Optuna study (SQLite inside the run, so a killed search resumes) → each trial builds its recipe (the base recipe
plus the sampled dotted overrides), trains it in its own child Run, reports the eval loss at every evaluation to
the pruner, and returns its score → trials table, ``trials.csv``/``trials.jsonl`` and ``best/`` (a link to the
best trial's System).

The score is the dev metric: the eval loss of the recipe's eval split by default (the best checkpoint's, as
``fit`` loads it at the end), or a Task's primary metric through the eval harness (``task=``). The pruner always
sees the eval loss during training, negated when the score is maximised, so that "worse" means the same to both.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from tailorlm.core.config import StrictModel, dump_config, load_config
from tailorlm.core.io import atomic_write_text, atomic_write_yaml
from tailorlm.core.run import Run
from tailorlm.errors import ConfigError
from tailorlm.train.search_space import SearchSpace, check_space
from tailorlm.train.sft.config import SFTRecipe

log = logging.getLogger("tailorlm.train.search")

STUDY_NAME = "search"
STUDY_DB = "study.db"
TRIALS_DIR = "trials"
BEST = "best"
RECIPE_FILE = "recipe.yaml"
SPACE_FILE = "space.yaml"


class SearchConfig(StrictModel):
    """What the search was asked to do; snapshotted as the search run's config, and read back by ``--resume``."""

    recipe: str
    space: str
    overrides: list[str] = Field(default_factory=list)
    trials: int
    task: str | None = None
    keep_checkpoints: bool = False


@dataclass
class TrialRow:
    """One line of the trials table."""

    number: int
    state: str  # complete | pruned | fail | running | waiting
    score: float | None
    params: dict[str, Any]
    seconds: float | None
    run: str | None
    pruned_at_step: int | None = None


@dataclass
class SearchResult:
    run: Run
    metric: str
    direction: str
    trials: list[TrialRow] = field(default_factory=list)
    best: TrialRow | None = None
    best_system: Path | None = None


class _Pruned(Exception):
    """Raised by the pruning callback inside ``trainer.train()``: the trial stops at once, nothing is saved."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"pruned at step {step} (eval loss {value:.4f})")
        self.step, self.value = step, value


def pruning_callback(trial: Any, *, sign: float = 1.0) -> Any:
    """A TrainerCallback that reports every eval loss to ``trial`` and stops training when the pruner says so.

    ``sign`` is -1 when the study maximises (a task metric): the pruner must see "higher is better" values too.
    Evaluations after training (``fit``'s final ``evaluate()``) are not reported: they repeat a step already seen.
    """
    from transformers import TrainerCallback

    class OptunaPruning(TrainerCallback):
        def __init__(self) -> None:
            self.training = False
            self.reported: set[int] = set()

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.training = True

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.training = False

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kwargs: Any) -> None:
            value = (metrics or {}).get("eval_loss")
            step = state.global_step
            if not self.training or value is None or step in self.reported:
                return
            self.reported.add(step)
            trial.report(sign * float(value), step)
            if trial.should_prune():
                raise _Pruned(step, float(value))

    return OptunaPruning()


# --- building blocks ----------------------------------------------------------------------------------------


def _sampler(space: SearchSpace, done: int = 0) -> Any:
    """The sampler, seeded by the space's seed plus the trials already in the study: a resumed search must not
    replay the random draws of its first session (it would propose the same points again)."""
    import optuna

    s = space.sampler
    if s.type == "random":
        return optuna.samplers.RandomSampler(seed=s.seed + done)
    return optuna.samplers.TPESampler(seed=s.seed + done, n_startup_trials=s.n_startup_trials)


def _pruner(space: SearchSpace) -> Any:
    import optuna

    p = space.pruner
    if p.type == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps, interval_steps=p.interval_steps
    )


def _open_study(run: Run, space: SearchSpace, direction: str) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our table and run log report the trials
    storage = f"sqlite:///{(run.path / STUDY_DB).absolute()}"
    study = optuna.create_study(
        study_name=STUDY_NAME,
        storage=storage,
        sampler=_sampler(space),
        pruner=_pruner(space),
        direction=direction,
        load_if_exists=True,
    )
    if not study.trials:
        for point in space.enqueue:
            study.enqueue_trial(point)
    else:
        study.sampler = _sampler(space, len(study.trials))
    return study


def _recover_interrupted(study: Any) -> int:
    """Queue again the points of trials a previous session left unfinished; returns how many.

    A search killed outright leaves its trial RUNNING (marked failed here); Ctrl-C or an error lets Optuna mark it
    FAIL. Either way the point runs again, once: the retry carries ``retry_of`` so a later resume skips it.
    """
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    count = 0
    for t in trials:
        if t.state == TrialState.RUNNING:
            study.tell(t.number, state=TrialState.FAIL)
        elif t.state != TrialState.FAIL or t.number in retried:
            continue
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        log.warning("trial %d did not finish: it runs again with the same parameters", t.number)
        count += 1
    return count


def _finished(study: Any) -> int:
    from optuna.trial import TrialState

    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials(deepcopy=False))


def trial_rows(study: Any, root: Path) -> list[TrialRow]:
    """Every trial of the study as a table row, in trial order; ``root`` is the search run (trial runs are
    recorded relative to it, so the search directory can move)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        rows.append(
            TrialRow(
                number=t.number,
                state=t.state.name.lower(),
                score=t.value if t.values else None,
                params=dict(t.params),
                seconds=seconds,
                run=str(root / t.user_attrs["run"]) if t.user_attrs.get("run") else None,
                pruned_at_step=t.user_attrs.get("pruned_at_step"),
            )
        )
    return rows


def write_trials(run: Run, rows: Sequence[TrialRow], metric: str) -> None:
    """``trials.jsonl`` and ``trials.csv`` (one column per parameter), rewritten after every trial."""
    lines = [json.dumps({**r.__dict__, "metric": metric}, default=str) for r in rows]
    atomic_write_text(run.path / "trials.jsonl", "".join(line + "\n" for line in lines))
    params = list(dict.fromkeys(k for r in rows for k in r.params))
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(["number", "state", metric, *params, "seconds", "pruned_at_step", "run"])
    for r in rows:
        values = [json.dumps(r.params[p]) if isinstance(r.params.get(p), list) else r.params.get(p) for p in params]
        writer.writerow([r.number, r.state, r.score, *values, r.seconds, r.pruned_at_step, r.run])
    atomic_write_text(run.path / "trials.csv", buf.getvalue())  # fsynced, and a full disk is a clear error


def link_best(run: Run, artifacts: Path) -> Path:
    """``run/best`` → the best trial's artifacts (a relative link, so the run dir can move); a copy of its
    ``system.yaml`` (with absolute paths) where links are not possible. Returns ``best/system.yaml``."""
    from tailorlm.core.system import System

    best = run.path / BEST
    if best.is_symlink() or best.is_file():
        best.unlink()
    elif best.is_dir():
        shutil.rmtree(best)
    try:
        best.symlink_to(os.path.relpath(artifacts, run.path), target_is_directory=True)
    except OSError:
        System.load(artifacts).save(best)
    return best / "system.yaml"


# --- the search ---------------------------------------------------------------------------------------------


def search(
    recipe: str | Path | None,
    space_path: str | Path | None,
    *,
    overrides: Sequence[str] = (),
    n_trials: int | None = None,
    runs_root: str | Path = "runs",
    resume: str | Path | None = None,
    task: str | Path | None = None,
    keep_checkpoints: bool = False,
    callbacks: Callable[[int], Sequence[Any]] | None = None,
    on_trial: Callable[[TrialRow], None] | None = None,
) -> SearchResult:
    """Run (or, with ``resume=RUN_DIR``, continue) a search of ``n_trials`` finished trials.

    ``callbacks(trial_number)`` gives extra TrainerCallbacks per trial (the CLI's progress bar); ``on_trial`` is
    called with each finished trial's row.
    """
    if resume is not None:
        run_dir = Path(resume)
        cfg = load_config(SearchConfig, run_dir / "config.yaml")  # Run.create snapshotted it
        cfg = cfg.model_copy(update={"trials": n_trials or cfg.trials})
        recipe_file, space_file = run_dir / RECIPE_FILE, run_dir / SPACE_FILE
        extra: list[str] = list(overrides)  # overrides on resume apply to the trials still to run
    else:
        if recipe is None or space_path is None:
            raise ConfigError("a search needs a recipe and a space", hint="tailor train sft RECIPE --search SPACE")
        cfg = SearchConfig(
            recipe=str(recipe),
            space=str(space_path),
            overrides=list(overrides),
            trials=n_trials or 10,
            task=str(task) if task else None,
            keep_checkpoints=keep_checkpoints,
        )
        recipe_file, space_file, extra = Path(recipe), Path(space_path), list(overrides)

    space = load_config(SearchSpace, space_file)
    check_space(space, SFTRecipe, recipe_file, extra, str(cfg.space))
    base = load_config(SFTRecipe, recipe_file, extra)
    metric, direction, task_obj = _objective_metric(cfg.task)
    if task_obj is None and base.eval_data is None and base.eval_fraction == 0:
        raise ConfigError(
            "a search scores trials on held-out data, and this recipe has none",
            hint="set eval_data or eval_fraction in the recipe, or pass --task task.yaml",
        )

    if resume is not None:
        run = Run.reopen(resume)
    else:
        run = Run.create(
            f"search-{base.name}",
            root=runs_root,
            config=cfg,
            seed=space.sampler.seed,
            parent=base.system,
            kind="search",
        )
        # The run keeps its own copies: --resume needs neither the original files nor the same overrides.
        atomic_write_yaml(run.path / RECIPE_FILE, dump_config(base))
        atomic_write_yaml(run.path / SPACE_FILE, dump_config(space))
        recipe_file, extra = run.path / RECIPE_FILE, []

    with run:
        study = _open_study(run, space, direction)
        _recover_interrupted(study)
        remaining = max(cfg.trials - _finished(study), 0)
        run.logger.info(
            "search: %d trials to run (%d requested), score %s (%s)", remaining, cfg.trials, metric, direction
        )
        sign = 1.0 if direction == "minimize" else -1.0

        def objective(trial: Any) -> float:
            return _run_trial(trial, run, space, recipe_file, extra, task_obj, sign, cfg.keep_checkpoints, callbacks)

        def after(study: Any, trial: Any) -> None:
            rows = trial_rows(study, run.path)
            write_trials(run, rows, metric)
            if on_trial is not None:
                on_trial(next(r for r in rows if r.number == trial.number))

        if remaining:
            # Errors stop the search (catch=()): a trial that fails for a reason other than pruning is a bug or a
            # resource problem the user must see, and --resume continues after it is fixed.
            study.optimize(objective, n_trials=remaining, callbacks=[after], catch=())
        rows = trial_rows(study, run.path)
        write_trials(run, rows, metric)
        result = SearchResult(run=run, metric=metric, direction=direction, trials=rows)
        complete = [r for r in rows if r.state == "complete" and r.score is not None]
        if complete:
            best = study.best_trial
            result.best = next(r for r in rows if r.number == best.number)
            result.best_system = link_best(run, run.path / best.user_attrs["run"] / "artifacts")
            run.write_metrics(
                {
                    "metric": metric,
                    "direction": direction,
                    "best_score": best.value,
                    "best_trial": best.number,
                    "best_params": best.params,
                    "best_run": str(run.path / best.user_attrs["run"]),
                    "trials": {s: sum(r.state == s for r in rows) for s in ("complete", "pruned", "fail")},
                }
            )
            run.logger.info("best trial %d: %s = %.4f, %s", best.number, metric, best.value, best.params)
        else:
            run.logger.warning("no trial completed: no best System")
    return result


def _objective_metric(task: str | None) -> tuple[str, str, Any]:
    """(metric name, study direction, Task or None)."""
    if task is None:
        return "eval_loss", "minimize", None
    from tailorlm.core.task import Task
    from tailorlm.eval.metrics import get_metric

    task_obj = Task.load(task)
    higher = getattr(get_metric(task_obj.primary), "higher_is_better", True)
    return task_obj.primary, "maximize" if higher else "minimize", task_obj


def _run_trial(
    trial: Any,
    search_run: Run,
    space: SearchSpace,
    recipe_file: Path,
    overrides: list[str],
    task: Any,
    sign: float,
    keep_checkpoints: bool,
    callbacks: Callable[[int], Sequence[Any]] | None,
) -> float:
    """Train one trial in its own Run and return its score; raise ``TrialPruned`` when the pruner stops it."""
    import optuna

    from tailorlm.train.sft.recipe import CHECKPOINT_DIR, fit

    values = space.suggest(trial)
    recipe = load_config(SFTRecipe, recipe_file, [*overrides, *space.overrides(values)])
    run = Run.create(
        f"trial-{trial.number:03d}",
        root=search_run.path / TRIALS_DIR,
        config=recipe,
        seed=recipe.training.seed,
        parent=search_run.id,
        kind="search-trial",
    )
    trial.set_user_attr("run", run.path.relative_to(search_run.path).as_posix())
    search_run.logger.info("trial %d: %s → %s", trial.number, trial.params, run.path.name)
    pruned: _Pruned | None = None
    start = time.perf_counter()
    with run:
        run.write_metrics({"trial": trial.number, "params": trial.params})
        try:
            system = fit(
                recipe,
                run,
                callbacks=[pruning_callback(trial, sign=sign), *(callbacks or (lambda n: []))(trial.number)],
            )
        except _Pruned as stop:
            pruned = stop
            run.write_metrics({"state": "pruned", "pruned_at_step": stop.step, "eval_loss": stop.value})
        else:
            score = _score(run, system, task)
            run.write_metrics({"state": "complete", "score": score})
        finally:
            if not keep_checkpoints:
                # Trials are resumed as a whole, never from a checkpoint; the adapter in artifacts/ is what stays.
                with contextlib.suppress(OSError):
                    shutil.rmtree(run.path / CHECKPOINT_DIR)
    search_run.logger.info(
        "trial %d: %s in %.1fs", trial.number, pruned or f"score {score:.4f}", time.perf_counter() - start
    )
    if pruned is not None:
        trial.set_user_attr("pruned_at_step", pruned.step)
        raise optuna.TrialPruned(str(pruned))
    return score


def _score(run: Run, system: Any, task: Any) -> float:
    """The trial's dev score: its final eval loss, or the task's primary metric through the eval harness."""
    metrics = json.loads((run.path / "metrics.json").read_text(encoding="utf-8"))
    if task is None:
        if metrics.get("eval_loss") is None:
            raise ConfigError(f"trial {run.id} has no eval loss (its eval set was empty after filtering)")
        return float(metrics["eval_loss"])
    from tailorlm.eval.runner import evaluate

    # The trial's System is new, so no cached prediction could be reused: its cache lives and dies with the trial.
    result = evaluate(
        system,
        task,
        root=run.path / "eval",
        cache_dir=run.path / "eval-cache",
        progress=False,
        name=f"eval-{task.name}",
    )
    value = result.metrics["metrics"][task.primary]["value"]
    run.write_metrics({f"task.{task.primary}": value, "eval_run": str(result.run.path)})
    return float(value)
