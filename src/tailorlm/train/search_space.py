"""The search space of ``tailor train sft RECIPE.yaml --search SPACE.yaml``: which recipe fields vary, and how.

    params:
      training.learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}   # log-uniform
      strategy.r: {type: categorical, choices: [4, 8, 16, 32]}
      strategy.target_modules:                                   # named choices: a value may be a list
        type: categorical
        choices: {attention: [q_proj, v_proj], all: all-linear}
      training.epochs: {type: int, low: 1, high: 3}
    enqueue:                                                     # tried first, e.g. the recipe's own values
      - {training.learning_rate: 2.0e-4, strategy.r: 16, strategy.target_modules: all}
    sampler: {type: tpe, seed: 0}
    pruner: {type: median, n_startup_trials: 5, n_warmup_steps: 0}

Every key under ``params`` is a dotted path into the SFT recipe, checked against the recipe's schema before any
trial runs (an unknown path names the file and the key, with the closest valid key), and every bound or choice is
checked by building the recipe with it, so a trial never dies of a value the recipe refuses.
"""

from __future__ import annotations

import difflib
import json
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Field, model_validator

from tailorlm.core.config import StrictModel, load_config
from tailorlm.errors import ConfigError

Scalar = str | int | float | bool | None


class ParamSpec(StrictModel):
    """One searched field. One flat model (not a union) so that an unknown key is reported against it.

    ``float``/``int``: a value from [low, high], ``log: true`` samples log-uniformly (learning rates, ranks).
    ``categorical``: one of ``choices``, a list of scalars or a mapping name → value when values are lists.
    """

    type: Literal["float", "int", "categorical"] = Field(description="float | int | categorical")
    low: float | None = Field(None, description="float/int: smallest value.")
    high: float | None = Field(None, description="float/int: largest value.")
    log: bool = Field(False, description="float/int: sample log-uniformly (needs low > 0).")
    step: float | None = Field(None, gt=0, description="float/int: only low + k*step (not with log).")
    choices: list[Scalar] | dict[str, Any] | None = Field(None, description="categorical: the options.")

    @model_validator(mode="after")
    def _shape(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty list (or mapping) of choices")
            if self.low is not None or self.high is not None or self.log or self.step is not None:
                raise ValueError("low/high/log/step are for float and int parameters, not categorical")
            if isinstance(self.choices, list) and len(set(map(json.dumps, self.choices))) != len(self.choices):
                raise ValueError("choices repeat a value")
            return self
        if self.choices is not None:
            raise ValueError(f"choices are for categorical parameters, not {self.type}")
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs low and high")
        if self.type == "int" and not all(float(v).is_integer() for v in (self.low, self.high, self.step or 1)):
            raise ValueError("an int parameter needs integer low, high and step")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("log: true needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("step and log: true cannot be combined")
        return self

    @property
    def names(self) -> list[Any]:
        """Categorical: what Optuna samples and stores (the scalars, or the names of named choices)."""
        return list(self.choices or [])

    def value(self, sampled: Any) -> Any:
        """The recipe value of a sampled point (a named choice → its value)."""
        return self.choices[sampled] if isinstance(self.choices, dict) else sampled

    def contains(self, sampled: Any) -> bool:
        if self.type == "categorical":
            return sampled in self.names
        assert self.low is not None and self.high is not None
        return isinstance(sampled, int | float) and not isinstance(sampled, bool) and self.low <= sampled <= self.high

    def probes(self) -> list[Any]:
        """Recipe values that must all be valid: every choice, or both bounds."""
        if self.type == "categorical":
            return [self.value(n) for n in self.names]
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]


class SamplerSpec(StrictModel):
    type: Literal["tpe", "random"] = Field("tpe", description="tpe (Bergstra et al. 2011) or random search.")
    seed: int = Field(0, description="Sampler seed: the same space and seed propose the same trials.")
    n_startup_trials: int = Field(10, ge=0, description="TPE: random trials before the model kicks in (Optuna).")


class PrunerSpec(StrictModel):
    """Median stopping rule (Golovin et al. 2017, Google Vizier): stop a trial whose eval loss at a step is worse
    than the median of earlier trials at that step. Defaults are Optuna's."""

    type: Literal["median", "none"] = "median"
    n_startup_trials: int = Field(5, ge=0, description="Trials that finish before any pruning.")
    n_warmup_steps: int = Field(0, ge=0, description="A trial is never pruned before this training step.")
    interval_steps: int = Field(1, ge=1, description="Check every N reported steps.")


class SearchSpace(StrictModel):
    """``SPACE.yaml``: the parameters to vary (dotted recipe paths), points to try first, sampler and pruner."""

    params: dict[str, ParamSpec] = Field(min_length=1, description="Dotted recipe path → its distribution.")
    enqueue: list[dict[str, Any]] = Field(default_factory=list, description="Points tried first, in order.")
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)

    @model_validator(mode="after")
    def _enqueued_points_fit(self) -> SearchSpace:
        for i, point in enumerate(self.enqueue):
            for key, value in point.items():
                spec = self.params.get(key)
                if spec is None:
                    raise ValueError(f"enqueue[{i}]: {key!r} is not one of params ({', '.join(self.params)})")
                if not spec.contains(value):
                    allowed = spec.names if spec.type == "categorical" else f"[{spec.low}, {spec.high}]"
                    raise ValueError(f"enqueue[{i}].{key}: {value!r} is not in {allowed}")
        return self

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Sample one point from an Optuna trial: ``{dotted path: recipe value}``."""
        out: dict[str, Any] = {}
        for path, spec in self.params.items():
            if spec.type == "categorical":
                out[path] = spec.value(trial.suggest_categorical(path, spec.names))
                continue
            assert spec.low is not None and spec.high is not None
            if spec.type == "float":
                out[path] = trial.suggest_float(path, spec.low, spec.high, log=spec.log, step=spec.step)
            else:
                step = int(spec.step or 1)
                out[path] = trial.suggest_int(path, int(spec.low), int(spec.high), log=spec.log, step=step)
        return out

    def overrides(self, values: dict[str, Any]) -> list[str]:
        """Dotted ``key=value`` overrides for ``load_config``; JSON is YAML, so lists and strings survive."""
        return [f"{path}={json.dumps(value)}" for path, value in values.items()]


# --- validation against the recipe --------------------------------------------------------------------------


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``annotation`` (through Optional/Union/Annotated), if any."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        models = [m for a in get_args(annotation) if (m := _model_in(a)) is not None]
        return models[0] if models else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def check_path(recipe_cls: type[BaseModel], path: str, source: str) -> None:
    """Raise a ConfigError unless ``path`` (``training.learning_rate``) names a field (a leaf) of ``recipe_cls``."""
    cls: type[BaseModel] | None = recipe_cls
    parts = path.split(".")
    for i, part in enumerate(parts):
        here = ".".join(parts[:i])
        if cls is None:
            raise ConfigError(f"{source}: params.{path}: '{here}' is a value, not a section with keys")
        fields = list(cls.model_fields)
        if part not in cls.model_fields:
            close = difflib.get_close_matches(part, fields, n=1, cutoff=0.6)
            guess = f"; did you mean '{'.'.join([*parts[:i], close[0]])}'?" if close else ""
            where = f"under '{here}'" if here else "at the top level"
            raise ConfigError(
                f"{source}: params.{path}: unknown recipe key{guess}", hint=f"valid keys {where}: {', '.join(fields)}"
            )
        cls = _model_in(cls.model_fields[part].annotation)
    if cls is not None:
        raise ConfigError(
            f"{source}: params.{path}: '{path}' is a section; search one of its keys",
            hint=f"e.g. {', '.join(f'{path}.{k}' for k in list(cls.model_fields)[:4])}",
        )


def check_space(
    space: SearchSpace, recipe_cls: type[BaseModel], recipe: str | Path | None, overrides: list[str], source: str
) -> None:
    """Every path exists in the recipe, and every bound or choice builds a valid recipe (with the others fixed)."""
    for path in space.params:
        check_path(recipe_cls, path, source)
    for path, spec in space.params.items():
        for value in spec.probes():
            try:
                load_config(recipe_cls, recipe, [*overrides, *space.overrides({path: value})])
            except ConfigError as err:
                raise ConfigError(
                    f"{source}: params.{path}: the value {value!r} does not fit the recipe: {err.message}",
                    hint=err.hint,
                ) from None


def load_space(path: str | Path, recipe_cls: type[BaseModel] | None = None) -> SearchSpace:
    """Read and validate ``SPACE.yaml``; with ``recipe_cls`` its paths are checked against the recipe schema too."""
    space = load_config(SearchSpace, path)
    if recipe_cls is not None:
        for key in space.params:
            check_path(recipe_cls, key, str(path))
    return space
