"""Apply PEFT adapters named by a System to a loaded base model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tailorlm.core.system import AdapterSpec
from tailorlm.errors import ModelNotFoundError
from tailorlm.models.load import LoadedModel
from tailorlm.models.weights import refuse_pickle_weights


def apply_adapters(loaded: LoadedModel, adapters: Sequence[AdapterSpec]) -> LoadedModel:
    """Wrap ``loaded.model`` in a ``PeftModel``. One adapter is the common case; several are combined as a
    weighted linear sum (LoRA only), the simplest mixture PEFT supports."""
    from peft import PeftModel

    for spec in adapters:
        if not (Path(spec.path) / "adapter_config.json").is_file():
            raise ModelNotFoundError(
                f"adapter folder {spec.path} has no adapter_config.json", hint="point at a folder saved by peft"
            )
        # PEFT falls back to adapter_model.bin (a pickle) when the folder has no adapter_model.safetensors.
        refuse_pickle_weights(spec.path, kind="adapter", depth=0)
    names = [spec.name or Path(spec.path).name or f"adapter{i}" for i, spec in enumerate(adapters)]
    model = PeftModel.from_pretrained(loaded.model, adapters[0].path, adapter_name=names[0])
    for spec, name in zip(adapters[1:], names[1:], strict=True):
        model.load_adapter(spec.path, adapter_name=name)
    if len(adapters) > 1:
        model.add_weighted_adapter(
            names, [a.weight for a in adapters], adapter_name="combined", combination_type="linear"
        )
        model.set_adapter("combined")
    loaded.model = model.eval()
    loaded.extra["adapters"] = names
    return loaded
