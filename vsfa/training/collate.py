"""Tokenise records once (``LoadedVLM.encode_chat``: labels on assistant tokens only) and pad them into batches.

Each record is encoded alone, so a batch may mix text-only and image records (the ``mixed`` variant). The
collator right-pads the per-token tensors (real tokens keep positions 0..len-1, as in a batch of one) and
concatenates the per-image tensors (``pixel_values``, ``image_grid_thw``, ...) of the records that have them:
every supported family scatters image features into its image-token positions, so this matches the processor's
own batching.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vsfa.errors import DataError

# Tensors with one entry per token (shape [seq]); everything else is per image and concatenated.
PER_TOKEN = ("input_ids", "attention_mask", "labels", "token_type_ids", "mm_token_type_ids")
_PAD_VALUES = {"labels": -100, "attention_mask": 0, "token_type_ids": 0, "mm_token_type_ids": 0}


def encode_record(
    vlm, conversation: list[dict], images: Sequence, train_on: str = "last", pixel_dtype=None, index: int = 0
) -> dict[str, torch.Tensor]:
    """One conversation with its images as CPU tensors (per-token ones 1-D); a record with nothing to train on
    is a DataError naming ``index``."""
    batch = vlm.encode_chat([conversation], [list(images)] if images else None, train_on=train_on)
    item: dict[str, torch.Tensor] = {}
    for k, v in batch.items():
        if k == "response_mask" or not isinstance(v, torch.Tensor):
            continue
        v = v.detach().to("cpu")
        if k in PER_TOKEN:
            item[k] = v[0]
        else:
            item[k] = v.to(pixel_dtype) if (pixel_dtype is not None and v.is_floating_point()) else v
    if not (item["labels"] != -100).any():
        raise DataError(f"record {index}: no assistant tokens to train on after tokenisation")
    return item


def encode_records(
    vlm,
    conversations: Sequence[list[dict]],
    images: Sequence[Sequence],
    train_on: str = "last",
    pixel_dtype=None,
) -> list[dict[str, torch.Tensor]]:
    """Encode each conversation with its images; returns CPU tensors per record (per-token ones 1-D)."""
    return [
        encode_record(vlm, conv, imgs, train_on, pixel_dtype, i)
        for i, (conv, imgs) in enumerate(zip(conversations, images, strict=True))
    ]


class PaddingCollator:
    """Right-pads per-token tensors and concatenates per-image tensors."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = int(pad_token_id)

    def __call__(self, items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        length = max(int(it["input_ids"].shape[0]) for it in items)
        out: dict[str, torch.Tensor] = {}
        keys = list(dict.fromkeys(k for it in items for k in it))
        for k in keys:
            if k in PER_TOKEN:
                pad = self.pad_token_id if k == "input_ids" else _PAD_VALUES[k]
                rows = []
                for it in items:
                    v = it[k]
                    rows.append(torch.cat([v, v.new_full((length - v.shape[0],), pad)]))
                out[k] = torch.stack(rows)
            else:
                out[k] = torch.cat([it[k] for it in items if k in it])
        return out


class RecordDataset(torch.utils.data.Dataset):
    """Training records, each checked and tokenised once up front. The per-image tensors (``pixel_values``, ...)
    are kept while they fit ``pixel_budget`` bytes (default 1 GiB); a record past it is encoded again when it is
    drawn, so host memory stays bounded on large image sets (10k images at 336 px are about 13 GB, on every
    process) without slowing small runs. Encoding is deterministic: items equal :func:`encode_records`'."""

    def __init__(
        self,
        vlm,
        conversations: Sequence[list[dict]],
        images: Sequence[Sequence],
        train_on: str = "last",
        pixel_budget: int = 1 << 30,
    ):
        self.vlm, self.conversations, self.images, self.train_on = vlm, conversations, images, train_on
        self.items: list[dict[str, torch.Tensor]] = []
        self.kept_bytes = 0
        for i, (conv, imgs) in enumerate(zip(conversations, images, strict=True)):
            item = encode_record(vlm, conv, imgs, train_on, index=i)
            extra = sum(v.numel() * v.element_size() for k, v in item.items() if k not in PER_TOKEN)
            if extra and self.kept_bytes + extra > pixel_budget:
                item = {k: v for k, v in item.items() if k in PER_TOKEN}  # re-encoded when drawn
            else:
                self.kept_bytes += extra
            self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    def lengths(self) -> list[int]:
        """Tokens per record."""
        return [int(t["input_ids"].shape[0]) for t in self.items]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = self.items[i]
        if not self.images[i] or any(k not in PER_TOKEN for k in item):
            return item
        return encode_record(self.vlm, self.conversations[i], self.images[i], self.train_on, index=i)
