"""Merge a System's PEFT adapters into its base weights: one plain HF folder that any runtime loads without peft.

The merged System keeps the prompt program, retriever and generation settings; only ``model`` and ``adapters``
change. Prompt and prefix tuning add virtual tokens rather than weight deltas, so they cannot be merged.
"""

from __future__ import annotations

from pathlib import Path

from tailorlm.core.io import atomic_directory
from tailorlm.core.system import System
from tailorlm.errors import ConfigError

# PEFT types whose update is a weight delta or a rotation (LoRA family, IA3, LoHa, LoKr, OFT, VeRA):
# merge_and_unload folds them into the base (test_merge.py checks logits parity for lora/loha/lokr/oft/vera).
MERGEABLE = {"LORA", "IA3", "LOHA", "LOKR", "ADALORA", "BOFT", "OFT", "VERA"}


def merge_system(system: System, out: str | Path, *, dtype: str = "float32") -> System:
    """Write ``out/model`` (merged weights + tokenizer) and ``out/system.yaml``; return the merged System."""
    from tailorlm.models.adapters import apply_adapters
    from tailorlm.models.load import load_model

    if not system.adapters:
        raise ConfigError(f"System '{system.name}' has no adapters to merge")
    if system.head is not None:
        # The causal-LM loader below would drop the classification head and write a text generator.
        raise ConfigError(
            f"System '{system.name}' has a classification head; merging heads is not supported",
            hint="serve it as it is: `tailor eval` and `tailor generate` load the adapter and the head",
        )
    loaded = apply_adapters(load_model(system.model, device="cpu", dtype=dtype), system.adapters)
    kinds = {str(getattr(c.peft_type, "value", c.peft_type)) for c in loaded.model.peft_config.values()}
    if not kinds <= MERGEABLE:
        raise ConfigError(
            f"cannot merge {', '.join(sorted(kinds - MERGEABLE))} adapters into weights",
            hint="prompt tuning, prefix tuning and p-tuning add virtual tokens; serve them as adapters instead",
        )
    merged = loaded.model.merge_and_unload()
    out = Path(out)
    # Atomic: a killed merge never leaves a folder that looks like a complete model.
    with atomic_directory(out / "model") as tmp:
        merged.save_pretrained(tmp)
        loaded.tokenizer.save_pretrained(tmp)
    result = system.model_copy(
        update={"name": f"{system.name}-merged", "model": str((out / "model").resolve()), "adapters": []}
    )
    result.save(out)
    return result
