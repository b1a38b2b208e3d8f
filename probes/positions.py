"""Token-position selectors: which tokens of a prompt an activation is read at.

Every selector is a row of weights over the (left-padded) sequence that sums to 1, so one einsum reduces a
``[batch, seq, d]`` activation to ``[batch, n_positions, d]`` inside the hook, and padding never leaks in:

``last``          the last prompt token (before the response when one is teacher-forced)
``eoi``           each post-instruction chat-template token, named ``eoi-K`` ... ``eoi-1`` (``eoi-1`` is the last)
``eoi_mean``      the mean over those post-instruction tokens
``image_mean``    the mean over image tokens (``input_ids == image_token_id``)
``prompt_mean``   the mean over all prompt tokens (padding and response excluded)
``response_mean`` the mean over teacher-forced response tokens

The post-instruction tokens are whatever the family's chat template writes after the user's instruction
(e.g. `` ASSISTANT:`` or ``<|im_end|>\\n<|im_start|>assistant\\n``). They are found by rendering, never hard-coded:
the prompt is tokenized whole and cut at the end of the instruction text, and the tokens past the common
prefix are the post-instruction ones (if the template merges with the instruction's last character, that token
counts as post-instruction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vsfa.errors import DataError

POSITION_KINDS = ("last", "eoi", "eoi_mean", "image_mean", "prompt_mean", "response_mean")


def post_instruction_count(tokenizer, rendered: str, instruction: str) -> int:
    """Number of tokens the chat template puts after ``instruction`` at the end of ``rendered``."""
    cut = rendered.rfind(instruction)
    if cut < 0:
        raise DataError(f"instruction {instruction[:40]!r} not found in the rendered prompt")
    cut += len(instruction)
    full = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    head = tokenizer(rendered[:cut], add_special_tokens=False)["input_ids"]
    common = 0
    for a, b in zip(full, head, strict=False):
        if a != b:
            break
        common += 1
    return len(full) - common


def check_positions(requested: Sequence[str]) -> list[str]:
    """Validate requested position kinds (``eoi-2`` style names are accepted too)."""
    out = []
    for name in requested:
        base = name.split("-")[0] if name.startswith("eoi-") else name
        if base not in POSITION_KINDS:
            raise DataError(f"unknown position {name!r}; choose from {', '.join(POSITION_KINDS)}")
        if name not in out:
            out.append(name)
    if not out:
        raise DataError("no positions requested")
    return out


def expand_positions(requested: Sequence[str], n_eoi: int) -> tuple[str, ...]:
    """Position names as stored: ``eoi`` becomes ``eoi-K .. eoi-1``."""
    names: list[str] = []
    for name in check_positions(requested):
        if name.startswith("eoi") and n_eoi < 1:
            raise DataError(f"position {name!r}: the chat template writes no tokens after the instruction")
        if name == "eoi":
            names += [f"eoi-{j}" for j in range(n_eoi, 0, -1)]
        elif name.startswith("eoi-") and int(name[4:]) > n_eoi:
            raise DataError(f"position {name!r}: the template has only {n_eoi} post-instruction tokens")
        else:
            names.append(name)
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class PositionPlan:
    """Expanded position names plus the number of post-instruction tokens they assume."""

    names: tuple[str, ...]
    n_eoi: int

    def weights(
        self,
        attention_mask: torch.Tensor,
        input_ids: torch.Tensor,
        image_token_id: int | None = None,
        response_mask: torch.Tensor | None = None,
        item_ids: Sequence[str] | None = None,
    ) -> torch.Tensor:
        """Weights ``[batch, n_positions, seq]`` (rows sum to 1) for a left-padded batch.

        A requested span that is empty for an item (no image tokens, no response) is a DataError naming it.
        """
        mask = attention_mask.bool().cpu()
        ids = input_ids.cpu()
        bsz, seq = mask.shape
        resp = response_mask.bool().cpu() if response_mask is not None else torch.zeros_like(mask)
        prompt = mask & ~resp
        # One past the last prompt token: the first response token, else the sequence end (left padding).
        has_resp = resp.any(1)
        first_resp = torch.where(has_resp, resp.float().argmax(1), torch.full((bsz,), seq))
        arange = torch.arange(seq)
        w = torch.zeros(bsz, len(self.names), seq)
        for p, name in enumerate(self.names):
            if name == "last":
                sel = arange == (first_resp - 1).unsqueeze(1)
            elif name.startswith("eoi-"):
                sel = arange == (first_resp - int(name[4:])).unsqueeze(1)
            elif name == "eoi_mean":
                start = (first_resp - self.n_eoi).unsqueeze(1)
                sel = (arange >= start) & (arange < first_resp.unsqueeze(1))
            elif name == "image_mean":
                if image_token_id is None:
                    raise DataError("position 'image_mean': the model has no image token")
                sel = (ids == image_token_id) & prompt
            elif name == "prompt_mean":
                sel = prompt
            elif name == "response_mean":
                sel = resp & mask
            else:  # pragma: no cover - names come from expand_positions
                raise DataError(f"unknown position {name!r}")
            sel = sel & mask
            count = sel.sum(1)
            if (count == 0).any():
                row = int((count == 0).nonzero()[0, 0])
                who = item_ids[row] if item_ids is not None else f"row {row}"
                what = {"image_mean": "image tokens", "response_mean": "response tokens"}.get(name, "tokens")
                raise DataError(f"position {name!r}: item {who!r} has no {what}")
            w[:, p] = sel.float() / count.unsqueeze(1)
        return w


def reduce(act: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``[batch, seq, d]`` x ``[batch, P, seq]`` -> ``[batch, P, d]`` in float32.

    Unselected tokens (padding included) are zeroed first, so whatever a model leaves at padded positions
    cannot leak into the result; a non-finite value at a selected token does propagate (and is caught).
    """
    weights = weights.to(device=act.device)
    act = act.float()
    keep = (weights > 0).any(1).unsqueeze(-1)
    return torch.einsum("bps,bsd->bpd", weights, torch.where(keep, act, torch.zeros((), device=act.device)))
