"""The model card of a fine-tuning run: ``artifacts/README.md``, a Hugging Face card with YAML front matter.

It says what the System was trained on (paths, record counts, fingerprints), how (the recipe), how well (losses,
speed, memory, forgetting canaries), where it came from (parent, run id, git commit), and how to load it with
plain peft/transformers or with tailor. Everything comes from the run directory, so the card never disagrees
with ``run.json`` and ``metrics.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tailorlm.core.config import dump_config
from tailorlm.core.io import atomic_write_text
from tailorlm.core.run import Run
from tailorlm.core.system import System

CARD = "README.md"
# The packaged default model is SmolLM2-135M-Instruct; the card names its hub id so the Hub links the base.
DEFAULT_BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _base_model(spec: str) -> str:
    if spec == "default":
        return DEFAULT_BASE
    # A local folder is named absolutely, so the loading code below works from any directory.
    return str(Path(spec).resolve()) if Path(spec).is_dir() else spec


def _fmt(value: Any, spec: str = ".4f") -> str:
    if isinstance(value, bool) or value is None:
        return "–" if value is None else str(value)
    return format(value, spec) if isinstance(value, float) else str(value)


def _technique(recipe: Any) -> str:
    """The technique's name from its recipe class (SFTRecipe → sft, PretrainRecipe → pretrain)."""
    name = type(recipe).__name__.lower().removesuffix("recipe")
    return name or "sft"


def front_matter(run: Run, recipe: Any, system: System, base_spec: str) -> dict[str, Any]:
    """The YAML header the Hub reads: base model, library, tags, datasets (with their fingerprints)."""
    method = recipe.strategy.method
    datasets = run.meta.get("datasets") or []
    return {
        "base_model": _base_model(base_spec),
        "library_name": "peft" if system.adapters else "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["tailorlm", _technique(recipe), "trl", method, *(["peft"] if system.adapters else [])],
        "datasets": [d["path"] for d in datasets],
        # Not a Hub field: the content fingerprint of each dataset, so a card can be traced to exact data.
        "dataset_fingerprints": {d["path"]: d["fingerprint"] for d in datasets},
    }


def render_model_card(run: Run, recipe: Any, system: System, metrics: dict[str, Any], model_spec: str) -> str:
    """The card's text (front matter + Markdown); ``model_spec`` is the base model training started from."""
    base_spec = system.parent or model_spec
    header = yaml.safe_dump(front_matter(run, recipe, system, model_spec), sort_keys=False, allow_unicode=True)
    method = recipe.strategy.method
    lines = [f"---\n{header}---", "", f"# {system.name or recipe.name}", ""]
    lines.append(
        f"Trained from `{_base_model(model_spec)}` by tailorlm's `tailor train {_technique(recipe)}` "
        f"(strategy `{method}`), run `{run.id}`."
    )

    lines += ["", "## Data", "", "| split | path | records | fingerprint |", "|---|---|---|---|"]
    for d in run.meta.get("datasets") or []:
        lines.append(f"| {d['name']} | `{d['path']}` | {d['n_records']} | `{d['fingerprint']}` |")
    if getattr(recipe, "eval_data", None) is None and getattr(recipe, "eval_fraction", 0) > 0:
        held = f"{recipe.eval_fraction:.0%} of the training records held out (seed {recipe.training.seed})"
        lines += ["", f"Eval: {held}."]

    lines += ["", "## Recipe", "", "```yaml", yaml.safe_dump(dump_config(recipe), sort_keys=False).rstrip(), "```"]

    lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
    shown = [
        ("train loss", "train_loss", ".4f"),
        ("eval loss", "eval_loss", ".4f"),
        ("optimizer steps", "steps", "d"),
        ("tokens trained (this session)", "tokens", "d"),
        ("tokens/s", "tokens_per_s", ".1f"),
        ("peak RSS (MB)", "peak_rss_mb", ".0f"),
        ("peak GPU memory (MB)", "peak_gpu_mb", ".0f"),
        ("learning rate", "learning_rate", "g"),
        ("processes", "world_size", "d"),
    ]
    for label, key, spec in shown:
        if metrics.get(key) is not None:
            lines.append(f"| {label} | {_fmt(metrics[key], spec)} |")
    if c := metrics.get("canaries"):
        verdict = "ok" if c.get("promotable", True) else f"forgetting: drop beyond max_drop {c.get('max_drop')}"
        lines += [
            "",
            "Forgetting canaries (general-capability checks scored on the starting and the trained weights):",
            "",
            "| before | after | drop | verdict |",
            "|---|---|---|---|",
            f"| {_fmt(c.get('before'))} | {_fmt(c.get('after'))} | {_fmt(c.get('drop'), '+.4f')} | {verdict} |",
        ]

    git = run.meta.get("git") or {}
    commit = git.get("commit")
    lines += [
        "",
        "## Lineage",
        "",
        f"- parent: `{base_spec}`",
        f"- run: `{run.id}` (`{run.path}`)",
        f"- git commit: `{commit}`{' (uncommitted changes)' if git.get('dirty') else ''}" if commit else "- git: –",
        f"- seed: {run.meta.get('seed')}",
        f"- libraries: {', '.join(f'{k} {v}' for k, v in (run.meta.get('versions') or {}).items())}",
    ]

    lines += ["", "## How to use it", ""]
    base_id = _base_model(model_spec)
    if system.adapters:
        adapter = system.adapters[0].path
        lines += [
            "With plain `peft` and `transformers`:",
            "",
            "```python",
            "from peft import PeftModel",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'base = AutoModelForCausalLM.from_pretrained("{base_id}")',
            f'model = PeftModel.from_pretrained(base, "{adapter}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{base_id}")',
            "```",
        ]
    else:
        lines += [
            "With plain `transformers`:",
            "",
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'model = AutoModelForCausalLM.from_pretrained("{system.model}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{system.model}")',
            "```",
        ]
    if system.prompt is not None and system.prompt.system:
        lines += ["", f"The System sends this system message first: {system.prompt.system!r}."]
    lines += [
        "",
        "With tailor (the System also carries the prompt program and generation settings):",
        "",
        "```bash",
        f"tailor generate --system {run.artifacts} 'your question'",
        "```",
        "",
    ]
    return "\n".join(lines)


def write_model_card(run: Run, recipe: Any, system: System, metrics: dict[str, Any], model_spec: str) -> Path:
    """Write ``run.artifacts/README.md`` atomically and return its path."""
    path = run.artifacts / CARD
    atomic_write_text(path, render_model_card(run, recipe, system, metrics, model_spec))
    return path
