"""PPO with a value head for language models, on transformers' ``Trainer`` (TRL 1.16 ships no PPO trainer).

The recipe is Ziegler et al. 2019 (arXiv:1909.08593) and InstructGPT (Ouyang et al. 2022), with the implementation
details Huang et al. 2024 list for it (arXiv:2403.17031). Every ``ppo.epochs`` optimizer steps the trainer

1. samples ``group_size`` answers to each of ``batch_size`` prompts from the policy (a *rollout*);
2. scores each answer with the reward (a reward model, the task's metric, or a function: ``rl.py``'s rewards);
3. takes the log-probabilities of the answer tokens under the policy and the reference (with LoRA: the base with
   the adapter off) and the value head's estimate at every token;
4. turns the score into per-token rewards with a KL penalty β·(logπ − logπ_ref) on every token
   (``rl_math.kl_penalized_rewards``), and those into advantages by GAE (γ = 1, λ = 0.95), whitened over the batch;

then it takes ``ppo.epochs`` clipped updates of the policy and the value head on that rollout
(``rl_math.ppo_policy_loss`` + ``ppo.value_coef`` × ``ppo_value_loss``). The value head is one linear layer on the
policy's last hidden state (a shared trunk, as in TRL's former ``AutoModelForCausalLMWithValueHead``): one forward
pass gives both, and a CPU cannot afford a second model. It starts at zero, so early advantages are the whitened
returns.

A resumed run starts at the rollout its checkpoint's step belongs to; checkpoints carry the value head
(``value_head.safetensors``) and the optimizer state of both.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Sampler
from transformers import Trainer

from tailorlm.train.align.rl_math import (
    gae,
    kl_estimate,
    kl_penalized_rewards,
    masked_mean,
    masked_whiten,
    ppo_policy_loss,
    ppo_value_loss,
)
from tailorlm.train.align.rollouts import merged_adapter

log = logging.getLogger("tailorlm.train.align")

VALUE_HEAD_FILE = "value_head.safetensors"


@dataclass
class Rollout:
    """One batch of sampled answers and everything the PPO updates on it need (all detached)."""

    input_ids: torch.Tensor  # [B, P + C] left-padded prompt, then the answer (padded after its end)
    attention_mask: torch.Tensor
    prompt_length: int  # P
    mask: torch.Tensor  # [B, C] 1 on answer tokens up to and including the first end-of-sequence token
    logprobs: torch.Tensor  # [B, C] under the policy that sampled them
    values: torch.Tensor  # [B, C]
    advantages: torch.Tensor  # [B, C] whitened GAE
    returns: torch.Tensor  # [B, C] the value head's targets


class RepeatedBatches(Sampler[int]):
    """Indices in batches of ``batch_size`` (a seeded shuffle per pass), each batch yielded ``repeats`` times in a row:
    the Trainer then hands the same prompts to the ``repeats`` optimizer steps that share one rollout. A last,
    partial batch is dropped (a rollout has a fixed size)."""

    def __init__(self, n: int, batch_size: int, repeats: int, seed: int) -> None:
        if n < batch_size:
            raise ValueError(f"{n} prompts do not fill one batch of {batch_size}")
        self.n, self.batch_size, self.repeats, self.seed, self.passes = n, batch_size, repeats, seed, 0

    def __len__(self) -> int:
        return (self.n // self.batch_size) * self.batch_size * self.repeats

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.passes)).tolist()
        self.passes += 1
        for start in range(0, self.n - self.batch_size + 1, self.batch_size):
            batch = order[start : start + self.batch_size]
            for _ in range(self.repeats):
                yield from batch


def answer_mask(completion: torch.Tensor, eos_ids: Sequence[int]) -> torch.Tensor:
    """1 on each row's answer tokens up to and including its first end-of-sequence token (all of a row without
    one: it was cut at max_new_tokens); 0 on the padding after it."""
    is_end = torch.isin(completion, torch.tensor(list(eos_ids), device=completion.device))
    positions = torch.arange(completion.size(1), device=completion.device)
    first_end = torch.where(is_end, positions, completion.size(1)).amin(dim=1, keepdim=True)
    return (positions <= first_end).to(torch.float32)


def _rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return rows  # prompts stay message lists: the rollout renders them through the chat template


class PpoTrainer(Trainer):  # type: ignore[misc]
    """transformers' Trainer whose training step is a PPO update on a rollout it samples every ``epochs`` steps."""

    def __init__(
        self,
        *,
        model: Any,
        args: Any,
        train_dataset: Any,
        processing_class: Any,
        reward: Callable[..., list[float | None]],
        group_size: int,
        max_new_tokens: int,
        temperature: float,
        beta: float,
        ppo: Any,
        callbacks: Sequence[Any] = (),
    ) -> None:
        from trl.trainer.utils import disable_dropout_in_model

        # Dropout makes the update's log-probs differ from the rollout's by noise alone (ratio ≠ 1 at the start).
        disable_dropout_in_model(model)
        self.reward, self.group_size, self.max_new_tokens = reward, group_size, max_new_tokens
        self.temperature, self.beta, self.ppo = temperature, beta, ppo
        hidden = model.config.get_text_config().hidden_size
        self.value_head = torch.nn.Linear(hidden, 1)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)
        # Full or freeze training: the reference is a frozen copy; with LoRA it is the base with the adapter off.
        self.ref_model = None if hasattr(model, "peft_config") else _frozen_copy(model)
        self._rollout_batch: Rollout | None = None
        self._stats: dict[str, list[float]] = {}
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            processing_class=processing_class,
            data_collator=_rows,
            callbacks=list(callbacks),
        )
        self.value_head.to(self.args.device)  # the Trainer placed the model; the head goes with it
        self.completions_per_step = args.per_device_train_batch_size * group_size

    # --- data and optimizer -----------------------------------------------------------------------------------------

    def _get_train_sampler(self, train_dataset: Any = None) -> Sampler[int]:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return RepeatedBatches(len(dataset), self.args.per_device_train_batch_size, self.ppo.epochs, self.args.seed)

    def create_optimizer(self, model: Any = None) -> Any:
        optimizer = super().create_optimizer() if model is None else super().create_optimizer(model)
        if not any(p is self.value_head.weight for g in optimizer.param_groups for p in g["params"]):
            optimizer.add_param_group({"params": list(self.value_head.parameters()), "weight_decay": 0.0})
        return optimizer

    # --- rollouts ---------------------------------------------------------------------------------------------------

    def _end_ids(self) -> list[int]:
        ids = {self.processing_class.eos_token_id}
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update(configured if isinstance(configured, list) else [configured])
        return sorted(i for i in ids if i is not None)

    def _score_tokens(
        self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int, values: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(log-probs of the answer tokens, the value head at each, the policy's entropy there): one decoder pass,
        the LM head applied to the answer positions only (a full vocabulary projection of the prompt is waste)."""
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        decoder = inner.get_decoder()
        # Left padding: positions count from each row's first real token, as generate() numbered them.
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        hidden = decoder(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=False
        ).last_hidden_state[:, prompt_length - 1 : -1]
        logits = inner.get_output_embeddings()(hidden).float() / self.temperature
        logp_all = torch.log_softmax(logits, dim=-1)
        answer = input_ids[:, prompt_length:]
        logprobs = logp_all.gather(-1, answer.unsqueeze(-1)).squeeze(-1)
        entropy = -(logp_all.exp() * logp_all).sum(-1).detach()
        value = self.value_head(hidden.float()).squeeze(-1) if values else None
        return logprobs, value, entropy

    @torch.no_grad()
    def _rollout(self, rows: list[dict[str, Any]]) -> Rollout:
        from transformers import GenerationConfig

        tokenizer = self.processing_class
        prompts = [row["prompt"] for row in rows for _ in range(self.group_size)]
        references = [row.get("references") or [] for row in rows for _ in range(self.group_size)]
        tokenizer.padding_side = "left"
        enc = tokenizer.apply_chat_template(
            prompts, add_generation_prompt=True, tokenize=True, padding=True, return_tensors="pt", return_dict=True
        )
        model = self.model
        model.eval()
        end_ids = self._end_ids()
        gen = GenerationConfig(
            do_sample=True, temperature=self.temperature, top_k=0, top_p=1.0, max_new_tokens=self.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=end_ids,
        )  # fmt: skip
        prompt_ids, prompt_mask = enc["input_ids"].to(model.device), enc["attention_mask"].to(model.device)
        with merged_adapter(model):  # rollouts.py: the same samples, without LoRA's per-token work
            out = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=gen)
        P = prompt_ids.size(1)
        answer = out[:, P:]
        mask = answer_mask(answer, end_ids)
        answer = torch.where(mask.bool(), answer, tokenizer.pad_token_id)
        input_ids = torch.cat([prompt_ids, answer], dim=1)
        attention_mask = torch.cat([prompt_mask, mask.to(prompt_mask.dtype)], dim=1)

        logprobs, values, entropy = self._score_tokens(model, input_ids, attention_mask, P, values=True)
        assert values is not None
        if self.ref_model is not None:
            ref_logprobs = self._score_tokens(self.ref_model, input_ids, attention_mask, P, values=False)[0]
        else:
            with model.disable_adapter():
                ref_logprobs = self._score_tokens(model, input_ids, attention_mask, P, values=False)[0]
        model.train()

        texts = tokenizer.batch_decode(answer, skip_special_tokens=True)
        completions = [[{"role": "assistant", "content": text}] for text in texts]
        got = self.reward(prompts=prompts, completions=completions, references=references, trainer_state=self.state)
        unscored = sum(s is None for s in got)
        score = torch.tensor([0.0 if s is None else float(s) for s in got], device=mask.device)

        rewards = kl_penalized_rewards(score, logprobs, ref_logprobs, mask, self.beta, "k1")
        advantages, returns = gae(rewards, values, mask, self.ppo.gamma, self.ppo.lam)
        advantages = masked_whiten(advantages, mask)
        kl = kl_estimate(logprobs, ref_logprobs, "k1") * mask
        lengths = mask.sum(dim=1)
        # Answers that ran to max_new_tokens without an end token: a rising share is answers growing.
        cut = ~torch.isin(answer, torch.tensor(end_ids, device=answer.device)).any(dim=1)
        self.state.num_input_tokens_seen += int(attention_mask.sum())
        self._record(
            reward=score.mean().item(),
            reward_std=score.std().item() if score.numel() > 1 else 0.0,
            kl=(kl.sum() / mask.sum()).item(),  # per answer token, as GRPO logs it (the adaptive β steers this)
            kl_sequence=kl.sum(dim=1).mean().item(),
            entropy=masked_mean(entropy, mask).item(),
            **{"completions/mean_length": lengths.mean().item()},
            **{"completions/clipped_ratio": cut.float().mean().item()},
            non_score_reward=(rewards.sum(dim=1) - score).mean().item(),
            value_mean=masked_mean(values, mask).item(),
            unscored=float(unscored),
        )
        return Rollout(input_ids, attention_mask, P, mask, logprobs, values, advantages, returns)

    # --- the update -------------------------------------------------------------------------------------------------

    def compute_loss(
        self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> torch.Tensor:
        # The sampler repeats each batch of prompts ppo.epochs times: the first of those steps samples the rollout
        # (as does the first step after a resume), the others reuse it.
        if self._rollout_batch is None or self.state.global_step % self.ppo.epochs == 0:
            self._rollout_batch = self._rollout(inputs)
        b = self._rollout_batch
        logprobs, values, _ = self._score_tokens(model, b.input_ids, b.attention_mask, b.prompt_length, values=True)
        assert values is not None
        policy_loss, policy_clipped = ppo_policy_loss(logprobs, b.logprobs, b.advantages, b.mask, self.ppo.clip)
        value_loss, value_clipped = ppo_value_loss(values, b.values, b.returns, b.mask, self.ppo.value_clip)
        with torch.no_grad():
            # Schulman's k3 between the rollout's policy and this step's: how far the updates have moved it.
            approx_kl = masked_mean(kl_estimate(b.logprobs, logprobs.detach(), "k3"), b.mask)
        self._record(
            policy_loss=policy_loss.item(),
            value_loss=value_loss.item(),
            clip_fraction=policy_clipped.item(),
            value_clip_fraction=value_clipped.item(),
            approx_kl=approx_kl.item(),
        )
        return policy_loss + self.ppo.value_coef * value_loss

    # --- logs and checkpoints ---------------------------------------------------------------------------------------

    def _record(self, **values: float) -> None:
        for key, value in values.items():
            self._stats.setdefault(key, []).append(value)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        for key, values in self._stats.items():
            logs[key] = sum(values) / len(values)
        logs["beta"] = self.beta
        self._stats = {}
        super().log(logs, start_time)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        from safetensors.torch import save_file

        super()._save(output_dir, state_dict)
        if self.args.should_save:
            folder = Path(output_dir if output_dir is not None else self.args.output_dir)
            save_file({k: v.contiguous() for k, v in self.value_head.state_dict().items()}, folder / VALUE_HEAD_FILE)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        from safetensors.torch import load_file

        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = Path(resume_from_checkpoint) / VALUE_HEAD_FILE
        if path.is_file():
            self.value_head.load_state_dict(load_file(path))
        else:
            log.warning("%s has no %s: the value head starts again from zero", resume_from_checkpoint, VALUE_HEAD_FILE)


def _frozen_copy(model: Any) -> Any:
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref
