"""QLoRA's base model: the frozen weights in 4-bit NF4 (bitsandbytes), LoRA adapters trained on top in bf16.

Dettmers et al. 2023: NF4 storage, double quantization of the quantization constants, bf16 compute. bitsandbytes'
4-bit kernels need a CUDA GPU (its CPU backend is partial and not what QLoRA measures), so ``require_qlora``
refuses before any data is read or any step is taken, and says to use ``lora`` instead.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from tailorlm.errors import ConfigError


def qlora_unavailable_reason() -> str | None:
    """Why QLoRA cannot run here, or None when it can (a CUDA GPU and bitsandbytes)."""
    import torch

    missing = []
    if not torch.cuda.is_available():
        missing.append("no CUDA GPU is visible")
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("bitsandbytes is not installed")
    return "; ".join(missing) or None


def require_qlora() -> None:
    """Refuse early, with the alternative, when this machine cannot train QLoRA."""
    if reason := qlora_unavailable_reason():
        raise ConfigError(
            f"QLoRA needs a CUDA GPU with bitsandbytes (4-bit NF4 kernels), and here {reason}",
            hint="use strategy.method=lora (the same adapter on unquantized weights), "
            "or run on a GPU machine after `pip install bitsandbytes`",
        )


def load_4bit(spec: str) -> Any:
    """The base model in 4-bit NF4 with double quantization and bf16 compute, on this process's GPU."""
    import time

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from tailorlm.models.load import LoadedModel, resolve_model_path
    from tailorlm.models.weights import refuse_pickle_weights, safetensors_kwargs

    require_qlora()
    start = time.perf_counter()
    path = resolve_model_path(spec)
    bnb = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",  # QLoRA's NormalFloat4: optimal for normally distributed weights
        bnb_4bit_use_double_quant=True,  # quantize the quantization constants too (~0.37 bit/parameter saved)
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    # Under accelerate/torchrun every process loads its own copy onto its own GPU.
    device = int(os.environ.get("LOCAL_RANK", "0"))
    refuse_pickle_weights(path, depth=0)
    model = AutoModelForCausalLM.from_pretrained(
        path, quantization_config=bnb, device_map={"": device}, dtype=torch.bfloat16, **safetensors_kwargs()
    )
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        spec=spec,
        path=path,
        device=torch.device("cuda", device),
        dtype=torch.bfloat16,
        load_seconds=time.perf_counter() - start,
    )
