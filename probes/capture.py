"""Streaming activation capture: a model x a contrast set -> an activation store (see :mod:`probes.store`).

Prompts are rendered with the family's chat template, batched with left padding, and run once through the
hooked model. Inside each hook the ``[batch, seq, d]`` activation is reduced at once to the requested positions
(:mod:`probes.positions`), so nothing sequence-long is kept; the forward stops after the last requested hook
(no later layers, no LM head). Batches stream into safetensors shards; the manifest is written last and the
folder appears atomically, so an interrupted capture leaves nothing that looks complete.

:class:`Capturer` adds the content-addressed cache: the same model weights + adapter + tokenizer/template +
dtype, prompt set, positions and hooks give the same key, and a complete store with that key is reused (the
model is not even loaded when every request is a hit).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from probes.contrasts import ContrastSet
from probes.positions import PositionPlan, check_positions, expand_positions, post_instruction_count, reduce
from probes.store import (
    HOOK_CONVENTION,
    HOOK_CONVENTION_NOTE,
    STORE_KIND,
    STORE_VERSION,
    ActivationStore,
    StoreWriter,
    cached_store,
    store_folder,
)
from vsfa import distributed as dist
from vsfa.config import check_counts
from vsfa.errors import DataError, VsfaError
from vsfa.io import (
    atomic_dir,
    model_fingerprint,
    output_lock,
    sha256_file,
    sha256_json,
    vsfa_cache_dir,
    write_manifest,
)
from vsfa.progress import progress as vsfa_progress

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "processor_config.json",
    "preprocessor_config.json",
)
HOOK_KIND_DEFAULT = "hook_resid_post"


class _StopForward(Exception):
    """Raised by the last capture hook: the rest of the forward is not needed."""


@dataclass(frozen=True)
class ModelSpec:
    """Which model to capture from: a base folder, optionally with a peft adapter (attached or merged).

    ``backend`` defaults to ``torch`` (plain forward hooks): it reads the same TransformerLens-named points as
    the bridge (the hooked-model tests check the two agree) with far less per-module overhead, which matters
    for capture throughput (see ``perf/bench_capture.py``). The backend is not part of the cache key.
    """

    path: str
    adapter: str | None = None
    dtype: str | None = None
    device: str = "cpu"
    merge: bool = False
    backend: str = "torch"

    def key(self) -> str:
        """Content key of the model as it runs: weights, adapter, tokenizer/template files, dtype, merge."""
        from vsfa.models.loading import QUANTIZED, resolve_dtype

        folder = Path(self.path)
        if not folder.is_dir():
            raise VsfaError(f"{self.path}: model folder not found")
        tok = {f: sha256_file(folder / f) for f in TOKENIZER_FILES if (folder / f).is_file()}
        spec = {
            "model": model_fingerprint(folder),
            "tokenizer": tok,
            "adapter": model_fingerprint(self.adapter) if self.adapter else None,
            "dtype": self.dtype if self.dtype in QUANTIZED else str(resolve_dtype(self.dtype, self.device)),
            "merge": bool(self.adapter and self.merge),
        }
        return sha256_json(spec)

    def load(self):
        """Load the model and wrap it in a :class:`~probes.hooked.HookedVLM`."""
        from probes.hooked import HookedVLM
        from vsfa.models.loading import load_vlm

        vlm = load_vlm(
            self.path, adapter=self.adapter, merge=self.merge, dtype=self.dtype, device=self.device
        )
        return HookedVLM(vlm, backend=self.backend)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "adapter": self.adapter, "dtype": self.dtype, "merge": self.merge}


@dataclass(frozen=True)
class CaptureSpec:
    """What to read: position kinds, layers (None = all), hook kinds, and the stored dtype."""

    positions: tuple[str, ...] = ("last",)
    layers: tuple[int, ...] | None = None
    hook_kinds: tuple[str, ...] = (HOOK_KIND_DEFAULT,)
    store_dtype: str = "float32"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CaptureSpec:
        layers = d.get("layers")
        return cls(
            positions=tuple(d["positions"]),
            layers=tuple(layers) if layers is not None else None,
            hook_kinds=tuple(d["hook_kinds"]),
            store_dtype=d.get("store_dtype", "float32"),
        )

    def hook_names(self, n_layers: int) -> list[str]:
        """Hook names in firing order (layer by layer)."""
        from probes.hooked import HOOK_KINDS, hook_name

        for k in self.hook_kinds:
            if k not in HOOK_KINDS:
                raise DataError(f"unknown hook kind {k!r}; choose from {', '.join(HOOK_KINDS)}")
        layers = range(n_layers) if self.layers is None else sorted(set(self.layers))
        for layer in layers:
            if not 0 <= layer < n_layers:
                raise DataError(f"layer {layer} out of range: the model has {n_layers} layers")
        order = [k for k in HOOK_KINDS if k in self.hook_kinds]
        return [hook_name(layer, k) for layer in layers for k in order]


def capture_key(model_key: str, cset: ContrastSet, spec: CaptureSpec) -> str:
    """Content key of one capture."""
    check_positions(spec.positions)
    return sha256_json(
        {"version": STORE_VERSION, "model": model_key, "set": cset.key(), "capture": spec.as_dict()}
    )


def _item_inputs(vlm, cset: ContrastSet, need_response: bool) -> tuple[list[str], list[list[Any]]]:
    texts = []
    for it in cset.items:
        if need_response and it.response is None:
            raise DataError(f"contrast set {cset.name!r}: item {it.id!r} has no response for 'response_mean'")
        texts.append(vlm.render(list(it.messages)))
    return texts, [cset.item_images(it) for it in cset.items]


def plan_for(vlm, cset: ContrastSet, positions: Sequence[str], texts: Sequence[str]) -> PositionPlan:
    """Expand the requested positions for this model's template and this set's prompts."""
    requested = check_positions(positions)
    n_eoi = 0
    if any(p.startswith("eoi") for p in requested):
        counts = [
            post_instruction_count(vlm.tokenizer, t, it.instruction)
            for t, it in zip(texts, cset.items, strict=True)
        ]
        n_eoi = min(counts) if counts else 0
    return PositionPlan(expand_positions(requested, n_eoi), n_eoi)


def run_batch(hooked, inputs: dict[str, torch.Tensor], names: Sequence[str], weights: torch.Tensor):
    """One forward with capture hooks; returns ``{hook: [batch, P, d]}`` float32 on CPU.

    Reductions stay on the model's device until the forward ends (one transfer, no sync per hook).
    """
    got: dict[str, torch.Tensor] = {}
    weights = weights.to(hooked.vlm.device)

    def capture(act: torch.Tensor, name: str) -> None:
        got[name] = reduce(act, weights)
        if len(got) == len(names):
            raise _StopForward

    try:
        with torch.no_grad(), hooked.hooks([(n, capture) for n in names]):
            hooked.model(**inputs, use_cache=False)
    except _StopForward:
        pass
    missing = [n for n in names if n not in got]
    if missing:
        raise VsfaError(f"capture hooks did not fire: {missing[:3]}")
    return {n: got[n].cpu() for n in names}


def _part_name(i: int) -> str:
    return f"batch-{i:06d}.safetensors"


def _parallel_parts(
    out: Path, starts: list[int], compute: Callable[[int], dict[str, torch.Tensor]], progress: bool | None
) -> Path | None:
    """Under a launcher: each process computes its share of the batches (:func:`vsfa.distributed.my_share`)
    into ``.<out>.parts/batch-NNNNNN.safetensors`` beside the store (a folder every process sees) and waits
    for the others; returns that folder for the main process to merge. In one process: None (nothing done)."""
    if dist.world() == 1:
        return None
    parts = out.with_name(f".{out.name}.parts")
    with dist.collective():
        if dist.is_main():  # leftovers of an interrupted capture
            shutil.rmtree(parts, ignore_errors=True)
            parts.mkdir(parents=True)
    with dist.collective():
        mine = dist.my_share(starts)
        bar = vsfa_progress(
            mine, f"capture part {dist.rank()}", quiet=progress is False or not dist.is_main(), unit="batch"
        )
        for i, start in bar:
            save_file(compute(start), str(parts / _part_name(i)), metadata={"format": "pt"})
    return parts


def capture_set(
    hooked,
    cset: ContrastSet,
    out: str | Path,
    spec: CaptureSpec = CaptureSpec(),
    key: str = "",
    model_info: dict[str, Any] | None = None,
    batch_size: int = 16,
    shard_items: int = 256,
    progress: bool | None = None,
) -> ActivationStore:
    """Capture ``cset`` on ``hooked`` into the store folder ``out`` (built atomically, manifest last).

    ``progress``: a bar over the batches (:func:`vsfa.progress.progress`); None shows it unless ``TQDM_DISABLE``.
    """
    if not cset.items:
        raise DataError(f"contrast set {cset.name!r} ({cset.source}) has no items")
    vlm = hooked.vlm
    need_response = "response_mean" in spec.positions
    texts, images = _item_inputs(vlm, cset, need_response)
    plan = plan_for(vlm, cset, spec.positions, texts)
    names = spec.hook_names(hooked.n_layers)
    has_images = any(images)
    image_token = getattr(vlm.config, "image_token_id", None)
    t0 = time.perf_counter()

    def compute(start: int) -> dict[str, torch.Tensor]:
        """Activations of the batch starting at item ``start`` (the same batch whatever the process count)."""
        items = cset.items[start : start + batch_size]
        imgs = images[start : start + batch_size] if has_images else None
        if need_response:
            convs = [
                [*it.messages, {"role": "assistant", "content": [{"type": "text", "text": it.response}]}]
                for it in items
            ]
            inputs = vlm.encode_chat(convs, imgs)
        else:
            inputs = vlm.encode(texts[start : start + batch_size], imgs)
        inputs = dict(inputs)
        inputs.pop("labels", None)
        response_mask = inputs.pop("response_mask", None)
        weights = plan.weights(
            inputs["attention_mask"],
            inputs["input_ids"],
            image_token,
            response_mask,
            [it.id for it in items],
        )
        acts = run_batch(hooked, inputs, names, weights)
        for name, t in acts.items():
            bad = ~torch.isfinite(t).reshape(t.shape[0], -1).all(1)
            if bad.any():
                item = items[int(bad.nonzero()[0, 0])].id
                raise DataError(f"non-finite activations at {name} for item {item!r} of set {cset.name!r}")
        return acts

    out = Path(out)
    starts = list(range(0, len(texts), max(1, batch_size)))
    parts = _parallel_parts(out, starts, compute, progress)  # None in one process
    with dist.collective():  # only the main process writes the store; a failure there stops every process
        if dist.is_main():
            with atomic_dir(out) as tmp:
                writer = StoreWriter(tmp, names, plan.names, hooked.d_model, shard_items, spec.store_dtype)
                bar = vsfa_progress(starts, f"capture {cset.name}", quiet=progress is False, unit="batch")
                for i, start in enumerate(bar):
                    acts = compute(start) if parts is None else load_file(str(parts / _part_name(i)))
                    rows = [it.index_row(cset.name) for it in cset.items[start : start + batch_size]]
                    writer.add(acts, rows)
                shards = writer.finish()
                write_manifest(
                    tmp,
                    {
                        "kind": STORE_KIND,
                        "version": STORE_VERSION,
                        "key": key,
                        "convention": HOOK_CONVENTION,
                        "hook_convention": HOOK_CONVENTION_NOTE,
                        "model": {
                            **(model_info or {}),
                            "source": vlm.source,
                            "adapter": vlm.adapter,
                            "family": vlm.family.name,
                            "n_layers": hooked.n_layers,
                            "dtype": str(vlm.dtype).removeprefix("torch."),
                        },
                        "set": {
                            "name": cset.name,
                            "key": cset.key(),
                            "positive": cset.positive,
                            "negative": cset.negative,
                            "counts": cset.counts(),
                            "source": cset.source,
                        },
                        "capture": spec.as_dict(),
                        "hooks": names,
                        "positions": list(plan.names),
                        "n_eoi": plan.n_eoi,
                        "d_model": hooked.d_model,
                        "n_items": len(texts),
                        "shards": shards,
                        "store_dtype": spec.store_dtype,
                        "seconds": round(time.perf_counter() - t0, 3),
                        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    },
                )
            if parts is not None:
                shutil.rmtree(parts, ignore_errors=True)
    return ActivationStore(out)


class SweepLoader:
    """Loads the models of a checkpoint sweep for :class:`Capturer` s: ``loader(spec)`` -> a HookedVLM.

    The base weights are read once per (base, dtype, device) and each checkpoint's adapter is hot-swapped in
    (:class:`~vsfa.models.loading.AdapterSwitcher`), so K checkpoints cost one base load. One model is resident
    at a time: a HookedVLM is valid until the loader is called for another spec (a Capturer given this loader
    asks for its model again at each capture). The TransformerBridge backend (it rewires the modules it wraps)
    and merged adapters are loaded afresh per spec instead. ``base_loads`` counts the reads of base weights.
    """

    def __init__(self) -> None:
        self._switcher = None
        self._switcher_key: tuple[Any, ...] | None = None
        self._current: tuple[ModelSpec, Any] | None = None
        self._earlier_loads = 0

    def __call__(self, spec: ModelSpec):
        from probes.hooked import HookedVLM
        from vsfa.models.loading import AdapterSwitcher, read_family

        if self._current is not None and self._current[0] == spec:
            return self._current[1]
        self._current = None
        backend = spec.backend
        if backend == "auto":
            backend = "bridge" if read_family(spec.path).tl_adapter else "torch"
        key = (spec.path, spec.dtype, spec.device, spec.merge, backend)
        if key != self._switcher_key:
            self.close()
            self._switcher = AdapterSwitcher(
                spec.path, spec.dtype, spec.device, merge=spec.merge, swap=backend == "torch"
            )
            self._switcher_key = key
        hooked = HookedVLM(self._switcher.load(spec.adapter), backend=backend)
        self._current = (spec, hooked)
        return hooked

    @property
    def base_loads(self) -> int:
        """How many times base weights were read from disk."""
        return self._earlier_loads + (self._switcher.base_loads if self._switcher is not None else 0)

    def close(self) -> None:
        """Drop the resident model."""
        if self._switcher is not None:
            self._earlier_loads += self._switcher.base_loads
            self._switcher.close()
        self._switcher = self._switcher_key = self._current = None


class Capturer:
    """Captures sets for one model into the content-addressed cache under ``root``.

    The model is loaded on the first cache miss only; ``hits`` / ``misses`` count what was served from the
    cache and what was computed. ``loader`` (e.g. a :class:`SweepLoader` shared by the Capturers of one
    sweep) loads the model instead of :meth:`ModelSpec.load`; it is asked again at each capture.
    """

    def __init__(
        self,
        model: ModelSpec,
        root: str | Path,
        batch_size: int = 16,
        shard_items: int = 256,
        progress: bool | None = None,
        hooked=None,
        loader: Callable[[ModelSpec], Any] | None = None,
    ):
        check_counts("capture", batch_size=batch_size, shard_items=shard_items)
        self.model = model
        self.root = Path(root)
        self.batch_size = batch_size
        self.shard_items = shard_items
        self.progress = progress
        self._hooked = hooked
        self._loader = loader
        self._model_key: str | None = None
        self.hits = 0
        self.misses = 0

    @property
    def model_key(self) -> str:
        if self._model_key is None:
            self._model_key = self.model.key()
        return self._model_key

    @property
    def hooked(self):
        """The hooked model (loaded now if it was not yet; from the ``loader`` when one was given)."""
        if self._hooked is None:
            if self._loader is not None:
                return self._loader(self.model)
            self._hooked = self.model.load()
        return self._hooked

    def locate(self, cset: ContrastSet, spec: CaptureSpec) -> tuple[Path, str]:
        """``(folder, key)`` of the store this capture maps to."""
        key = capture_key(self.model_key, cset, spec)
        return store_folder(self.root, self.model_key, cset.name, key), key

    def capture(self, cset: ContrastSet, spec: CaptureSpec = CaptureSpec()) -> ActivationStore:
        """The store of ``cset`` under ``spec``: from the cache when complete, else captured now."""
        folder, key = self.locate(cset, spec)
        hit = cached_store(folder, key)
        if dist.from_main(hit is not None):
            self.hits += 1
            return hit or ActivationStore(folder)
        lock = output_lock(folder, wait=True) if dist.is_main() else contextlib.nullcontext()
        with lock:  # another process capturing the same store: wait, then reuse
            hit = cached_store(folder, key) if dist.is_main() else None
            if dist.from_main(hit is not None):  # under a launcher every process follows the main's decision
                self.hits += 1
                return hit or ActivationStore(folder)
            self.misses += 1
            info = {"key": self.model_key, **self.model.describe()}
            return capture_set(
                self.hooked,
                cset,
                folder,
                spec,
                key=key,
                model_info=info,
                batch_size=self.batch_size,
                shard_items=self.shard_items,
                progress=self.progress,
            )

    def release(self) -> None:
        """Drop the loaded model (frees its memory)."""
        self._hooked = None


def capture(
    hooked,
    cset: ContrastSet,
    spec: CaptureSpec = CaptureSpec(),
    root: str | Path | None = None,
    batch_size: int = 16,
) -> ActivationStore:
    """Activations of ``cset`` on a loaded :class:`~probes.hooked.HookedVLM` (the notebook form of a capture).

    Stored in the content-addressed cache under ``root`` (default ``$VSFA_CACHE/acts``), keyed by the model's
    weights and adapter, the set and ``spec``: capturing the same set on the same model again is a cache hit.
    """
    vlm = hooked.vlm
    dtype = str(vlm.dtype).removeprefix("torch.")
    model = ModelSpec(vlm.source, vlm.adapter, dtype=dtype, device=str(vlm.device), merge=vlm.merged)
    root = Path(root) if root is not None else vsfa_cache_dir() / "acts"
    return Capturer(model, root, batch_size, hooked=hooked).capture(cset, spec)


@dataclass
class CaptureConfig:
    """Settings of ``vsfa capture``."""

    model: Path
    """Model folder."""
    contrast: str = "persona"
    """Set name or file (see README: contrast sets)."""
    adapter: Path | None = None
    """peft adapter folder."""
    positions: list[str] = field(default_factory=lambda: ["last"])
    """Positions: last, eoi, eoi_mean, image_mean, prompt_mean, ..."""
    layers: list[int] | None = field(default=None, metadata={"none": "all"})
    """'all' or comma-separated layer indices."""
    hooks: list[str] = field(default_factory=lambda: [HOOK_KIND_DEFAULT])
    """Hook kinds."""
    acts: Path = Path("runs/acts")
    """Activation cache root."""
    max_questions: int | None = None
    """Use only this many questions (persona / visual)."""
    batch_size: int = 16
    """Forward batch size."""
    device: str = "cpu"
    """torch device (cpu, cuda, cuda:1, ...) | auto: spread over the GPUs (accelerate device_map)."""
    dtype: str | None = None
    """float32 | bfloat16 | float16 | int8 | nf4 (bitsandbytes weights, CUDA) (default: the device's)."""
    backend: str = "torch"
    """torch (fast) | bridge | auto"""


def run_capture(cfg: CaptureConfig) -> str:
    """Capture activations of one set into the content-addressed store (reused when already there)."""
    from probes.contrasts import load_set

    check_counts("capture", max_questions=cfg.max_questions, batch_size=cfg.batch_size)
    cset = load_set(cfg.contrast, max_questions=cfg.max_questions)
    layers = tuple(cfg.layers) if cfg.layers is not None else None
    spec = CaptureSpec(tuple(cfg.positions or ["last"]), layers, tuple(cfg.hooks))
    model = ModelSpec(
        str(cfg.model),
        str(cfg.adapter) if cfg.adapter else None,
        cfg.dtype,
        dist.local_device(cfg.device),
        backend=cfg.backend,
    )
    cap = Capturer(model, cfg.acts, cfg.batch_size)
    store = cap.capture(cset, spec)
    return (
        f"{'cached' if cap.hits else 'wrote'} {store.folder} ({store.n} items, {len(store.hooks)} hooks, "
        f"positions {', '.join(store.positions)})"
    )
