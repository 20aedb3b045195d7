"""Text for continued pretraining: documents → held-out split → token ids + EOS → packed blocks → batches.

    docs = read_documents(TextSource(path="corpus/"))
    train, held_out = split_documents(docs, 0.1, seed=0)          # by document: no held-out text leaks into training
    blocks = pack_blocks(tokenize_documents(train, tokenizer), 512)  # {"input_ids", "seq_lengths"} rows
    batch = PackedCollator(tokenizer.pad_token_id)([blocks[0], blocks[1]])

A packed block holds several documents (and pieces of documents longer than a block). ``PackedCollator`` gives
every document its own position ids starting at 0 and no attention mask; transformers then builds a
block-diagonal causal mask from the position-id resets (``masking_utils.find_packed_sequence_indices``), so a
token never attends to another document. The first token of each document is not a target: nothing in its own
document predicts it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tailorlm.errors import DataError
from tailorlm.rag.readers import ReaderOptions, ReadProblem, iter_documents, supported_suffixes
from tailorlm.rag.types import Document
from tailorlm.train.pretrain.config import TextSource

log = logging.getLogger("tailorlm.train.pretrain")

_SHOWN_PROBLEMS = 5


def read_documents(source: TextSource) -> list[Document]:
    """Every document under ``source``; a ``DataError`` naming the path(s) when nothing, or not everything, reads."""
    options = ReaderOptions(
        include=source.include,
        exclude=source.exclude,
        text_field=source.text_field,
        title_field=None,
        id_field=None,  # record ids only name documents here: a repeated id must not make a record unreadable
    )
    docs: list[Document] = []
    problems: list[ReadProblem] = []
    for item in iter_documents(source.path, options):
        (problems if isinstance(item, ReadProblem) else docs).append(item)
    if problems and not source.skip_unreadable:
        shown = "\n  ".join(str(p) for p in problems[:_SHOWN_PROBLEMS])
        more = f"\n  … and {len(problems) - _SHOWN_PROBLEMS} more" if len(problems) > _SHOWN_PROBLEMS else ""
        raise DataError(
            f"{len(problems)} unreadable document(s) under {source.path}:\n  {shown}{more}",
            issues=problems,
            hint="fix or exclude them (data.exclude), or set data.skip_unreadable=true",
        )
    for problem in problems:
        log.warning("skipped unreadable document %s", problem)
    if not docs:
        raise DataError(
            f"no documents to train on in {source.path}",
            hint=f"readable types: {', '.join(supported_suffixes())}; check data.include={source.include} "
            f"and data.exclude={source.exclude}",
        )
    return docs


def split_documents(docs: Sequence[Document], fraction: float, seed: int) -> tuple[list[Document], list[Document]]:
    """Hold out ``fraction`` of the documents (at least one), chosen with ``seed``; both halves keep their order.

    The split is by document, not by block: blocks of one document share its topic and wording, so holding out
    blocks would measure memorisation of the training documents rather than the domain.
    """
    if fraction <= 0:
        return list(docs), []
    if len(docs) < 2:
        raise DataError(
            f"only {len(docs)} document: nothing is left to train on after holding one out",
            hint="add documents, give eval_data, or set eval_fraction=0 (no perplexity is reported then)",
        )
    n_held = min(len(docs) - 1, max(1, round(fraction * len(docs))))
    held = set(random.Random(seed).sample(range(len(docs)), n_held))
    return [d for i, d in enumerate(docs) if i not in held], [d for i, d in enumerate(docs) if i in held]


def tokenize_documents(docs: Sequence[Document], tokenizer: Any) -> list[list[int]]:
    """Token ids of each document followed by EOS, the separator the model learns to end a document with.

    ``add_special_tokens`` stays on: a tokenizer that starts sequences with BOS (Llama, Mistral) saw that in
    pretraining too. SmolLM2's adds nothing.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("the tokenizer has no EOS token to separate documents with")
    ids = tokenizer([d.text for d in docs])["input_ids"]
    return [list(row) if row and row[-1] == eos else [*row, eos] for row in ids]


def pack_blocks(token_ids: Sequence[Sequence[int]], max_length: int) -> Any:
    """Pack documents into rows of at most ``max_length`` tokens with TRL's best-fit-decreasing ``bfd_split``.

    A document longer than a block is split into pieces (no token is dropped) and each piece packs like a
    document; ``seq_lengths`` lists the documents (or pieces) in a row, in order. Returns a ``datasets.Dataset``.
    """
    import datasets
    from trl import pack_dataset

    if not token_ids:
        return datasets.Dataset.from_dict({"input_ids": [], "seq_lengths": []})
    raw = datasets.Dataset.from_dict({"input_ids": [list(t) for t in token_ids]})
    return pack_dataset(raw, max_length, strategy="bfd_split")


def position_ids(seq_lengths: Sequence[int]) -> list[int]:
    """Positions that restart at 0 for every document of a packed row: [3, 2] → [0, 1, 2, 0, 1]."""
    return [p for n in seq_lengths for p in range(n)]


@dataclass
class PackedCollator:
    """Stack packed rows into ``input_ids``, ``labels`` and ``position_ids`` of shape (batch, longest row).

    No ``attention_mask`` on purpose: transformers only derives the per-document mask from the position ids when
    there is none. Padding (only after the last row's documents) gets position 0 and label -100, so each pad token
    is a sequence of its own that no real token sees. Unlike TRL's padding-free collator the batch is not flattened
    into one row: attention then costs batch × L² instead of (batch × L)², which matters on a CPU.
    """

    pad_token_id: int

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        width = max(len(e["input_ids"]) for e in examples)
        input_ids = torch.full((len(examples), width), self.pad_token_id, dtype=torch.long)
        positions = torch.zeros((len(examples), width), dtype=torch.long)
        for i, example in enumerate(examples):
            n = len(example["input_ids"])
            input_ids[i, :n] = torch.tensor(example["input_ids"], dtype=torch.long)
            positions[i, :n] = torch.tensor(position_ids(example["seq_lengths"]), dtype=torch.long)
        labels = input_ids.clone()
        # Position 0 = a document's first token (or padding): its only left context is another document.
        labels[positions == 0] = -100
        return {"input_ids": input_ids, "labels": labels, "position_ids": positions}
