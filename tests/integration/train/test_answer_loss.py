"""The plain answer-only loss (train/sft/answer_loss.py) equals the model's own loss and TRL's fused one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.integration, pytest.mark.isa]


def _batch(pad_id: int) -> dict[str, torch.Tensor]:
    """Two right-padded rows: prompt tokens labelled -100, then a few answer tokens, then padding."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 200, (2, 12), generator=gen)
    mask = torch.tensor([[1] * 12, [1] * 8 + [0] * 4])
    ids[1, 8:] = pad_id
    labels = ids.clone()
    labels[0, :7] = -100
    labels[1, :5] = -100
    labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_equals_the_models_own_loss_with_and_without_the_padding_mask(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    from tailorlm.train.sft.answer_loss import answer_loss

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    batch = _batch(model.config.pad_token_id or 0)
    with torch.no_grad():
        reference = model(**batch).loss  # transformers: mean over shifted labels != -100
        ours = answer_loss(model, batch)  # drops the mask: the batch is right-padded
        masked = answer_loss(model, {**batch, "position_ids": torch.arange(12).expand(2, 12)})  # keeps it
        summed = answer_loss(model, batch, num_items_in_batch=2 * int((batch["labels"][:, 1:] != -100).sum()))
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(masked, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(summed, reference / 2, rtol=1e-5, atol=1e-6)  # normalised by the whole batch


def test_trainer_uses_it_and_matches_trls_fused_head(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The same LoRA model and batch through TailorSFTTrainer.compute_loss and through TRL's own compute_loss."""
    import json

    from trl import SFTTrainer

    from tailorlm.core.config import load_config
    from tailorlm.core.run import Run
    from tailorlm.train.sft import SFTRecipe
    from tailorlm.train.sft.recipe import build_trainer

    rows = [
        {"messages": [{"role": "user", "content": f"question {i} " * (i + 1)}, {"role": "assistant", "content": "ok"}]}
        for i in range(4)
    ]
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    recipe = load_config(
        SFTRecipe,
        None,
        [f"model={tiny_model_dir}", f"data.path={data}", "eval_fraction=0", "canaries.enabled=false"],
    )
    with Run.create("sft", root=tmp_path / "runs", config=recipe) as run:
        trainer, *_ = build_trainer(recipe, run)
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        ours = trainer.compute_loss(trainer.model, dict(batch))
        trls = SFTTrainer.compute_loss(trainer, trainer.model, dict(batch))
    assert type(trainer).compute_loss is not SFTTrainer.compute_loss
    # bf16 autocast on CPUs that have it: the two paths round differently, so compare at bf16 precision.
    torch.testing.assert_close(ours, trls, rtol=2e-2, atol=2e-2)
