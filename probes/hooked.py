"""HookedVLM: the one object the toolkit uses to run a VLM with hooks.

Two backends expose the same TransformerLens hook names on the language-model decoder
(``blocks.{l}.hook_resid_pre``, ``blocks.{l}.hook_resid_post``, ``blocks.{l}.hook_attn_out``,
``blocks.{l}.hook_mlp_out``, ``l`` 0-based):

* ``bridge``: TransformerLens ``TransformerBridge`` for families it has an adapter for. The bridge wraps
  the HF modules in place, so the HF forward and ``generate`` fire its hook points.
* ``torch``: plain forward hooks on the HF decoder layers, for families without an adapter (Qwen2-VL,
  SmolVLM) or on request.

Either way the model is run through its own HF forward, so inputs are the processor's batch and a peft
adapter (attached unmerged, or merged) runs as it is.

Hook convention (:data:`probes.store.HOOK_CONVENTION_NOTE`, recorded as ``hook_convention`` in every store,
direction artifact and probe report): ``blocks.{l}.hook_resid_pre`` is the input and ``blocks.{l}.hook_resid_post``
the output of decoder layer ``l``, the residual stream before any final norm. So ``hook_resid_pre`` of layer ``l``
== HF ``output_hidden_states[l]`` and ``hook_resid_post`` of layer ``l`` == HF ``hidden_states[l+1]`` -- except
for the last layer ``L-1``: HF's ``hidden_states[L]`` is taken *after* the final norm
(``Family.final_norm_path``), i.e. it is ``final_norm(blocks.{L-1}.hook_resid_post)``, while the hook gives the
un-normed residual. Compare the last layer with HF only through that norm (:mod:`probes.fidelity` does).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from vsfa.env import guard_torchvision_autoinstall
from vsfa.errors import ModelLoadError, VsfaError
from vsfa.models.loading import LoadedVLM

HookFn = Callable[[torch.Tensor, str], torch.Tensor | None]
"""A hook: receives the activation ``[batch, seq, d]`` and the hook name; may return a replacement."""

HOOK_KINDS = ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out")
_HOOK_RE = re.compile(r"^blocks\.(\d+)\.(hook_resid_pre|hook_resid_post|hook_attn_out|hook_mlp_out)$")
BACKENDS = ("auto", "bridge", "torch")


def hook_name(layer: int, kind: str = "hook_resid_post") -> str:
    """``blocks.{layer}.{kind}``."""
    return f"blocks.{layer}.{kind}"


def parse_hook_name(name: str) -> tuple[int, str]:
    """``"blocks.3.hook_resid_post"`` -> ``(3, "hook_resid_post")``; other names are an error."""
    m = _HOOK_RE.match(name)
    if not m:
        raise VsfaError(f"unsupported hook name {name!r}; expected blocks.<layer>.<{'|'.join(HOOK_KINDS)}>")
    return int(m.group(1)), m.group(2)


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple | list) else output


def _replace_first(output: Any, new: torch.Tensor) -> Any:
    if isinstance(output, tuple):
        return (new, *output[1:])
    if isinstance(output, list):
        return [new, *output[1:]]
    return new


class HookedVLM:
    """Run a loaded VLM with hooks at TransformerLens-named points of its language model."""

    def __init__(self, vlm: LoadedVLM, backend: str = "auto"):
        if backend not in BACKENDS:
            raise VsfaError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
        if backend == "auto":
            backend = "bridge" if vlm.family.tl_adapter else "torch"
        if backend == "bridge" and not vlm.family.tl_adapter:
            raise ModelLoadError(
                f"family {vlm.family.name!r} has no TransformerBridge adapter; use backend='torch'"
            )
        self.vlm = vlm
        self.backend = backend
        self.bridge = self._boot_bridge() if backend == "bridge" else None

    # -- properties -------------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return self.vlm.n_layers

    @property
    def d_model(self) -> int:
        return self.vlm.d_model

    @property
    def model(self):
        """The model to call: the peft wrapper when an adapter is attached, else the HF model."""
        return self.vlm.model

    def hook_names(self, kinds: Sequence[str] = ("hook_resid_post",)) -> list[str]:
        """All hook names of the given kinds, layer by layer."""
        return [hook_name(layer, k) for layer in range(self.n_layers) for k in kinds]

    # -- backends ---------------------------------------------------------------------------------------
    def _boot_bridge(self):
        guard_torchvision_autoinstall()
        from transformer_lens.model_bridge import TransformerBridge
        from transformer_lens.model_bridge import supported_architectures as sa

        adapter_cls = getattr(sa, self.vlm.family.tl_adapter, None)
        if adapter_cls is not None and getattr(adapter_cls, "required_libraries", None):
            # Qwen adapters demand torchvision only for the processor, which we build ourselves.
            adapter_cls.required_libraries = []
        try:
            return TransformerBridge.boot_transformers(
                self.vlm.source,
                hf_model=self.vlm.hf_model,
                tokenizer=self.vlm.tokenizer,
                device=str(self.vlm.device),
                dtype=self.vlm.dtype,
            )
        except Exception as e:
            raise ModelLoadError(
                f"{self.vlm.source}: TransformerBridge failed to boot ({type(e).__name__}: {e}); try backend='torch'"
            ) from None

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str, HookFn]]) -> Iterator[None]:
        """Attach hooks for the duration of the block (around a forward or ``generate``)."""
        for name, _ in fwd_hooks:
            layer, _kind = parse_hook_name(name)
            if layer >= self.n_layers:
                raise VsfaError(f"hook {name!r}: the model has {self.n_layers} layers")
        if self.bridge is not None:
            wrapped = [(name, self._bridge_fn(name, fn)) for name, fn in fwd_hooks]
            with self.bridge.hooks(fwd_hooks=wrapped):
                yield
            return
        handles = [self._register_torch(name, fn) for name, fn in fwd_hooks]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    @staticmethod
    def _bridge_fn(name: str, fn: HookFn):
        def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
            out = fn(act, name)
            return act if out is None else out

        return hook

    def _register_torch(self, name: str, fn: HookFn):
        layer_idx, kind = parse_hook_name(name)
        layer = self.vlm.layers[layer_idx]
        if kind == "hook_resid_pre":

            def pre(module, args, kwargs):
                if args:
                    out = fn(args[0], name)
                    return None if out is None else ((out, *args[1:]), kwargs)
                out = fn(kwargs["hidden_states"], name)
                return None if out is None else (args, {**kwargs, "hidden_states": out})

            return layer.register_forward_pre_hook(pre, with_kwargs=True)
        family = self.vlm.family
        targets = {
            "hook_resid_post": "",
            "hook_attn_out": family.attn_out_module,
            "hook_mlp_out": family.mlp_out_module,
        }
        try:
            module = layer.get_submodule(targets[kind])
        except AttributeError:
            module = None
        if module is None:
            raise VsfaError(f"hook {name!r} is not available for family {self.vlm.family.name!r}")

        def post(module, args, output):
            out = fn(_first(output), name)
            return None if out is None else _replace_first(output, out)

        return module.register_forward_hook(post)

    # -- running ----------------------------------------------------------------------------------------
    def forward(
        self, batch: Mapping[str, torch.Tensor], fwd_hooks: Sequence[tuple[str, HookFn]] = ()
    ) -> torch.Tensor:
        """Logits ``[batch, seq, vocab]`` of one forward pass (no grad), with optional hooks."""
        with torch.no_grad(), self.hooks(fwd_hooks):
            return self.model(**batch).logits

    def run_with_cache(
        self,
        batch: Mapping[str, torch.Tensor],
        names: Sequence[str],
        positions: torch.Tensor | None = None,
        fwd_hooks: Sequence[tuple[str, HookFn]] = (),
        return_logits: bool = False,
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Forward once and return activations at ``names``.

        ``positions``: a LongTensor ``[batch, k]`` of token indices; then each activation is ``[batch, k, d]``
        (only those positions are kept, so memory does not grow with sequence length). Without it, the full
        ``[batch, seq, d]``. Extra ``fwd_hooks`` (e.g. steering) run before the capture at the same point.
        """
        cache: dict[str, torch.Tensor] = {}

        def capture(act: torch.Tensor, name: str) -> None:
            if positions is not None:
                idx = positions.to(act.device).unsqueeze(-1).expand(-1, -1, act.shape[-1])
                act = act.gather(1, idx)
            cache[name] = act.detach().float().cpu()

        hooks = [*fwd_hooks, *((n, capture) for n in names)]
        with torch.no_grad(), self.hooks(hooks):
            out = self.model(**batch)
        missing = [n for n in names if n not in cache]
        if missing:
            raise VsfaError(f"hooks did not fire: {missing}")
        return (out.logits if return_logits else None), cache

    def generate(
        self,
        batch: Mapping[str, torch.Tensor],
        fwd_hooks: Sequence[tuple[str, HookFn]] = (),
        **generate_kwargs,
    ) -> torch.Tensor:
        """HF ``generate`` with hooks attached; returns only the new tokens ``[batch, new]``."""
        kwargs = {"do_sample": False, "max_new_tokens": 32, **generate_kwargs}
        if self.bridge is not None:
            # TL 4.3's bridge-wrapped attention diverges from HF with the KV cache (seen on LLaVA): decode
            # without the cache, which is exact (slower; use backend="torch" for long generations).
            kwargs["use_cache"] = False
        tok = self.vlm.tokenizer
        kwargs.setdefault(
            "pad_token_id", tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        )
        with torch.no_grad(), self.hooks(fwd_hooks):
            out = self.model.generate(**batch, **kwargs)
        return out[:, batch["input_ids"].shape[1] :]

    def chat(self, prompts: Sequence[Any], max_new_tokens: int = 32, system: str | None = None) -> list[str]:
        """Greedy answers to ``prompts`` (strings, or ``{"text", "image"}`` dicts), with any hooks attached
        around the call (e.g. inside :func:`analysis.interventions.steering`)."""
        from vsfa.eval.generation import GenerationConfig, generate_batch
        from vsfa.eval.modelio import as_queries

        if self.bridge is not None:
            raise VsfaError("chat() runs the HF model and its torch hooks: load with backend='torch'")
        config = GenerationConfig(max_new_tokens=max_new_tokens, system_prompt=system, refusal_score=False)
        return [r["response"] for r in generate_batch(self.vlm, as_queries(prompts), config)]


def load_hooked(
    model: str | Path,
    adapter: str | Path | None = None,
    backend: str = "torch",
    device: str = "cpu",
    dtype: str | None = None,
) -> HookedVLM:
    """Load a model ready for hooks: a model folder, or a checkpoint folder (its recorded base + the adapter).

    ``backend="torch"`` (plain forward hooks) reads the same TransformerLens-named points as the bridge and
    is several times faster; ``"bridge"`` boots TransformerLens' TransformerBridge where the family has one.
    """
    from vsfa.models.loading import base_model_of, load_vlm

    folder = Path(model)
    if adapter is None and (folder / "adapter_config.json").is_file():
        folder, adapter = base_model_of(folder), folder
    return HookedVLM(load_vlm(folder, adapter=adapter, dtype=dtype, device=device), backend=backend)
