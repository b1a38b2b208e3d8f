"""The activation store: safetensors shards + a JSONL index + a manifest written last.

Layout of one store folder::

    shard-00000.safetensors   one tensor per hook name, [n_items_in_shard, n_positions, d_model]
    shard-00001.safetensors   ...
    index.jsonl               one row per item, in shard order: id, label, group, pair, split, category, set
    manifest.json             written last (the folder is complete only with it): model, set, hooks,
                              positions, shards, content key, hook convention (``convention``, the
                              identifier checked on read; ``hook_convention``, its exact statement)

Stores live in a content-addressed cache: ``<root>/<model key>/<set name>-<capture key>/`` where the capture key
hashes the model (weights, adapter, tokenizer/template files, dtype), the prompt set (items and image bytes),
positions, hooks and the store format version. The same key means the same activations, so a complete folder
with that key is reused instead of recomputed.

Loading functions (:func:`open_store`, :meth:`ActivationStore.load`) are what later stages (directions,
trajectories over checkpoints) use to read activations back.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vsfa.errors import ArtifactError
from vsfa.io import read_jsonl, read_manifest, write_jsonl_atomic

STORE_KIND = "vsfa.activations"
STORE_VERSION = 1
INDEX = "index.jsonl"
# The convention's identifier, written as ``convention`` and checked verbatim when a store or a direction
# artifact is read. It is kept as it was first written so that every existing artifact stays readable; its
# ``hidden_states[l+1]`` clause does not hold for the last layer, which HOOK_CONVENTION_NOTE states exactly.
HOOK_CONVENTION = (
    "transformer_lens: blocks.{l}.<hook> on the language-model decoder, l 0-based; "
    "blocks.{l}.hook_resid_post == HF hidden_states[l+1]"
)
# The exact statement, written as ``hook_convention`` beside ``convention`` in every manifest that records hooks
# (activation stores, direction artifacts, the probe report). Never part of a content key: adding or rewording
# it leaves every cached artifact valid.
HOOK_CONVENTION_NOTE = (
    "blocks.{l}.hook_resid_pre is the input and blocks.{l}.hook_resid_post the output of language-model decoder "
    "layer l (0-based; residual stream, before any final norm). hook_resid_pre of layer l == HF "
    "output_hidden_states[l]; hook_resid_post of layer l == HF hidden_states[l+1] for every layer but the last. "
    "For the last layer L-1, HF hidden_states[L] is final_norm(blocks.{L-1}.hook_resid_post) (the family's "
    "final norm, Family.final_norm_path), so the two differ there: this toolkit stores the un-normed residual."
)
STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.safetensors"


class StoreWriter:
    """Streams activations into shards of at most ``shard_items`` items, so memory stays flat in N.

    Write into a temp folder (e.g. :func:`vsfa.io.atomic_dir`); call :meth:`finish` and then write the manifest.
    """

    def __init__(
        self,
        folder: Path,
        hooks: Sequence[str],
        positions: Sequence[str],
        d_model: int,
        shard_items: int = 256,
        dtype: str = "float32",
    ):
        if dtype not in STORE_DTYPES:
            raise ArtifactError(f"unknown store dtype {dtype!r}; choose one of {', '.join(STORE_DTYPES)}")
        self.folder = Path(folder)
        self.hooks = list(hooks)
        self.positions = list(positions)
        self.d_model = d_model
        self.shard_items = max(1, shard_items)
        self.dtype = dtype
        self.rows: list[dict[str, Any]] = []
        self.shards: list[dict[str, Any]] = []
        self._buf: dict[str, list[torch.Tensor]] = {h: [] for h in self.hooks}
        self._buf_rows: list[dict[str, Any]] = []

    def add(self, acts: dict[str, torch.Tensor], rows: Sequence[dict[str, Any]]) -> None:
        """Append a batch: ``acts[hook]`` is ``[batch, n_positions, d]``; ``rows`` the index rows."""
        n = len(rows)
        for h in self.hooks:
            t = acts[h]
            if t.shape != (n, len(self.positions), self.d_model):
                raise ArtifactError(f"hook {h}: batch of shape {tuple(t.shape)}, expected ({n}, P, d)")
            self._buf[h].append(t.to(STORE_DTYPES[self.dtype]).cpu())
        self._buf_rows.extend(rows)
        while len(self._buf_rows) >= self.shard_items:
            self._write(self.shard_items)

    def _write(self, take: int) -> None:
        from safetensors.torch import save_file

        tensors = {}
        for h in self.hooks:
            whole = torch.cat(self._buf[h])
            tensors[h] = whole[:take].contiguous()
            self._buf[h] = [whole[take:]] if whole.shape[0] > take else []
        name = shard_name(len(self.shards))
        save_file(tensors, str(self.folder / name), metadata={"format": "pt"})
        self.shards.append({"file": name, "n": take})
        self.rows.extend(self._buf_rows[:take])
        self._buf_rows = self._buf_rows[take:]

    def finish(self) -> list[dict[str, Any]]:
        """Write the last (partial) shard and the index; returns the shard list for the manifest."""
        if self._buf_rows:
            self._write(len(self._buf_rows))
        write_jsonl_atomic(self.folder / INDEX, self.rows)
        return self.shards


class ActivationStore:
    """A complete activation store folder, opened read-only.

    ``index`` lists the items (dicts with id, label, group, pair, split, category, set) in storage order;
    :meth:`load` returns ``[n, d]`` float32 for one hook and position.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        m = self.manifest
        if m.get("kind") != STORE_KIND:
            raise ArtifactError(f"{self.folder}: not an activation store (manifest kind {m.get('kind')!r})")
        if m.get("version") != STORE_VERSION:
            raise ArtifactError(
                f"{self.folder}: store format version {m.get('version')}, expected {STORE_VERSION}"
            )
        if m.get("convention") != HOOK_CONVENTION:
            raise ArtifactError(
                f"{self.folder}: hook convention {m.get('convention')!r} is not {HOOK_CONVENTION!r}"
            )
        self.index = read_jsonl(self.folder / INDEX)
        total = sum(s["n"] for s in m["shards"])
        if len(self.index) != m["n_items"] or total != m["n_items"]:
            raise ArtifactError(
                f"{self.folder}: index has {len(self.index)} rows, shards {total} items, manifest {m['n_items']}"
            )
        for s in m["shards"]:
            if not (self.folder / s["file"]).is_file():
                raise ArtifactError(f"{self.folder / s['file']}: shard missing")

    # -- description ------------------------------------------------------------------------------------
    @property
    def hooks(self) -> list[str]:
        return list(self.manifest["hooks"])

    @property
    def positions(self) -> list[str]:
        return list(self.manifest["positions"])

    @property
    def d_model(self) -> int:
        return int(self.manifest["d_model"])

    @property
    def n(self) -> int:
        return int(self.manifest["n_items"])

    @property
    def key(self) -> str:
        return str(self.manifest["key"])

    @property
    def set_name(self) -> str:
        return str(self.manifest["set"]["name"])

    @property
    def positive(self) -> str:
        return str(self.manifest["set"]["positive"])

    def column(self, field: str) -> list[Any]:
        """One index field for every item, in order."""
        return [row.get(field) for row in self.index]

    def y(self) -> np.ndarray:
        """1 where the item's label is the set's positive class."""
        return np.array([int(lab == self.positive) for lab in self.column("label")])

    def mask(self, **where: Any) -> np.ndarray:
        """Boolean mask of items whose index fields equal the given values, e.g. ``mask(split="heldout")``."""
        keep = np.ones(self.n, dtype=bool)
        for field, value in where.items():
            keep &= np.array([v == value for v in self.column(field)])
        return keep

    # -- loading ----------------------------------------------------------------------------------------
    def _check(self, hook: str, position: str) -> int:
        if hook not in self.hooks:
            raise ArtifactError(
                f"{self.folder}: no hook {hook!r} in the store (has {', '.join(self.hooks[:4])} ...)"
            )
        if position not in self.positions:
            raise ArtifactError(f"{self.folder}: no position {position!r} (has {', '.join(self.positions)})")
        return self.positions.index(position)

    def load(self, hook: str, position: str) -> torch.Tensor:
        """Activations ``[n, d]`` (float32) at one hook and position; non-finite values are an ArtifactError."""
        from safetensors import safe_open

        p = self._check(hook, position)
        parts = []
        for s in self.manifest["shards"]:
            with safe_open(str(self.folder / s["file"]), framework="pt") as f:
                parts.append(f.get_slice(hook)[:, p : p + 1, :][:, 0].float())
        x = torch.cat(parts) if parts else torch.zeros(0, self.d_model)
        bad = ~torch.isfinite(x).all(1)
        if bad.any():
            row = self.index[int(bad.nonzero()[0, 0])]
            raise ArtifactError(
                f"{self.folder}: non-finite activations at {hook} / {position}, item {row['id']!r}"
            )
        return x

    def load_many(self, position: str, hooks: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """``{hook: [n, d]}`` for several hooks at one position."""
        return {h: self.load(h, position) for h in (hooks or self.hooks)}

    def iter_shards(self) -> Iterator[tuple[list[dict[str, Any]], dict[str, torch.Tensor]]]:
        """Yield ``(index rows, {hook: [n_shard, P, d]})`` shard by shard (bounded memory)."""
        from safetensors.torch import load_file

        start = 0
        for s in self.manifest["shards"]:
            rows = self.index[start : start + s["n"]]
            start += s["n"]
            yield rows, {k: v.float() for k, v in load_file(str(self.folder / s["file"])).items()}

    def __repr__(self) -> str:
        return f"ActivationStore({self.folder}, set={self.set_name}, n={self.n}, hooks={len(self.hooks)})"


def open_store(folder: str | Path) -> ActivationStore:
    """Open a complete store; a folder without manifest (interrupted capture) is an ArtifactError."""
    return ActivationStore(folder)


def store_folder(root: str | Path, model_key: str, set_name: str, key: str) -> Path:
    """Where the store with content ``key`` lives in the cache under ``root``."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in set_name)
    return Path(root) / model_key[:16] / f"{safe}-{key[:16]}"


def cached_store(folder: Path, key: str) -> ActivationStore | None:
    """The store at ``folder`` if it is complete and has content ``key``; else None."""
    if not (folder / "manifest.json").is_file():
        return None
    try:
        store = ActivationStore(folder)
    except ArtifactError:
        return None
    return store if store.key == key else None
