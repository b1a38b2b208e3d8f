"""The ``vsfa`` command: thin wrappers that parse options and call the stages.

Every :class:`~vsfa.errors.VsfaError` becomes one line on stderr (``error: ...``) and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

import vsfa  # noqa: F401  (applies offline defaults before transformers is imported)
from vsfa.errors import VsfaError

app = typer.Typer(
    help="VSFA toolkit: train Visual Self-Fulfilling Alignment and explain it.",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain click help wraps long option lists at any width; rich panels cut them at "…"
)
models_app = typer.Typer(help="Model registry, tiny offline models, fidelity checks.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _quiet_transformers() -> None:
    import warnings

    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notices, not ours
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


# ---------------------------------------------------------------------------------------------- models
@models_app.command("list")
def models_list() -> None:
    """List the supported VLM families and their quirks."""
    from rich.console import Console
    from rich.table import Table

    from vsfa.models.registry import FAMILIES

    table = Table("family", "architectures", "decoder layers", "hooks", "LoRA target regex")
    for fam in FAMILIES.values():
        hooks = f"bridge ({fam.tl_adapter})" if fam.tl_adapter else "torch hooks"
        table.add_row(fam.name, ", ".join(fam.architectures), fam.layers_path, hooks, fam.lora_target_regex)
    Console().print(table)


@models_app.command("tiny")
def models_tiny(
    family: str = typer.Option(..., help="llava | idefics3 | gemma3 | qwen2_vl | qwen2_5_vl | qwen3_vl"),
    out: Path = typer.Option(..., help="Output model folder."),
    seed: int = typer.Option(0, help="Weight seed."),
) -> None:
    """Build a tiny random-weight VLM (seconds on a CPU) that `load_vlm` opens like a real one."""
    from vsfa.models.tiny import save_tiny

    _quiet_transformers()
    folder = save_tiny(family, out, seed=seed)
    typer.echo(f"wrote {folder}")


@models_app.command("check")
def models_check(
    path: Path = typer.Argument(..., help="Model folder."),
    adapter: Path | None = typer.Option(None, help="peft adapter folder (merged for the check)."),
    backend: str = typer.Option("auto", help="auto | bridge | torch"),
    device: str = typer.Option("cpu"),
    dtype: str | None = typer.Option(None, help="float32 (CPU default) | bfloat16 | float16"),
    bound: float = typer.Option(1e-4, help="Fail (exit 1) when any layer's max relative error exceeds this."),
) -> None:
    """Hook-vs-HF fidelity: max relative error per layer of hooked resid_post vs HF hidden states."""
    from probes.fidelity import run_fidelity_check

    _quiet_transformers()
    report = run_fidelity_check(path, adapter=adapter, backend=backend, device=device, dtype=dtype)
    typer.echo(f"{report.source}: family {report.family}, backend {report.backend}")
    typer.echo(report.table())
    verdict = "ok" if report.max_rel_err <= bound else "FAIL"
    typer.echo(f"{verdict}: max relative error {report.max_rel_err:.3e} (bound {bound:.0e})")
    if verdict != "ok":
        raise typer.Exit(1)


@models_app.command("summary")
def models_summary(
    path: Path = typer.Argument(..., help="Model folder."),
    adapter: Path | None = typer.Option(None, help="peft adapter folder."),
    backend: str = typer.Option("auto", help="auto | bridge | torch"),
) -> None:
    """Load, hook and print a per-layer activation summary on a few multimodal inputs."""
    from probes.summary import layer_summary

    _quiet_transformers()
    typer.echo(layer_summary(path, adapter=adapter, backend=backend))


# ---------------------------------------------------------------------------------------------- data
data_app = typer.Typer(help="VSFA data: procedural images, image manifests, VQA builds, VLGuard, subsets.")
app.add_typer(data_app, name="data")


def _csv_ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise VsfaError(f"expected comma-separated integers, not {text!r}") from None


@data_app.command("images")
def data_images(
    kind: str = typer.Option(..., help="threat | neutral"),
    n: int = typer.Option(..., help="Number of images."),
    out: Path = typer.Option(..., help="Output image-set folder."),
    seed: int = typer.Option(0, help="First scene seed (scenes seed..seed+n-1)."),
    size: int = typer.Option(224, help="Image side in pixels."),
    text_prob: float = typer.Option(0.25, help="Share of scenes with a sign carrying a short text."),
    style: str = typer.Option("scene", help="scene | icon (one large object, for small vision towers)."),
    overwrite: bool = typer.Option(False, help="Replace a complete set rendered with other settings."),
) -> None:
    """Render procedural threat/neutral scenes with exact annotations (same seed: same layout)."""
    from vsfa.data.images import write_procedural_set

    folder = write_procedural_set(
        kind, n, out, seed=seed, size=size, text_prob=text_prob, style=style, overwrite=overwrite
    )
    typer.echo(f"wrote {n} {kind} images to {folder}")


@data_app.command("manifest")
def data_manifest_cmd(
    images: Path = typer.Option(..., help="Image folder (scanned recursively)."),
    label: str = typer.Option(..., help="threat | neutral | unsafe | safe | unknown"),
    out: Path = typer.Option(..., help="Output manifest (JSONL)."),
    skip_bad: bool = typer.Option(
        False, help="Leave out unreadable images and list them in <out>.report.json."
    ),
) -> None:
    """Image manifest of a folder: content hash, size, decode check."""
    from vsfa.data.images import write_image_manifest

    path, report = write_image_manifest(images, label, out, skip_bad=skip_bad)
    skipped = f", skipped {report['n_skipped']} (see {path}.report.json)" if report["n_skipped"] else ""
    typer.echo(f"wrote {path}: {report['n_images']} images{skipped}")


@data_app.command("build")
def data_build(
    out: Path = typer.Option(..., help="Output folder; one sub-folder per variant."),
    variants: str = typer.Option("image,text,mixed,control", help="Comma-separated variants."),
    procedural: int | None = typer.Option(None, help="Render N threat + N neutral scenes first."),
    threat: Path | None = typer.Option(None, help="Threat image set folder or manifest JSONL."),
    neutral: Path | None = typer.Option(None, help="Neutral image set folder or manifest JSONL (control)."),
    threat_annotations: Path | None = typer.Option(None, help="Annotations JSONL for the threat images."),
    neutral_annotations: Path | None = typer.Option(None, help="Annotations JSONL for the neutral images."),
    source: str = typer.Option("annotation", help="Answer source: annotation | self | endpoint."),
    model: Path | None = typer.Option(None, help="Base model folder (source 'self')."),
    endpoint: str | None = typer.Option(
        None, help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1."
    ),
    endpoint_model: str | None = typer.Option(None, help="Model name sent to the endpoint."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", help="Environment variable holding the endpoint key."),
    questions_per_image: int = typer.Option(3, help="Questions per image."),
    n_images: int | None = typer.Option(None, help="Use the first N images of each set."),
    seed: int = typer.Option(0, help="Template draw seed (and procedural scene seed)."),
    size: int = typer.Option(224, help="Procedural image size."),
    text_prob: float = typer.Option(0.25, help="Procedural sign rate."),
    style: str = typer.Option("scene", help="Procedural style: scene | icon (one large object)."),
    batch_size: int = typer.Option(8, help="Generation batch size (source 'self')."),
    max_new_tokens: int = typer.Option(96, help="Answer length limit (sources 'self', 'endpoint')."),
    device: str = typer.Option("cpu", help="Device for source 'self'."),
    allow_labelled: bool = typer.Option(False, help="Keep targets that fail the label-free lint (recorded)."),
    overwrite: bool = typer.Option(False, help="Replace a complete build made from other inputs."),
) -> None:
    """Build neutral VQA training sets (variants image/text/mixed/control with identical form)."""
    from vsfa.data.build import build_variants
    from vsfa.data.sources import make_source

    _quiet_transformers()
    src = make_source(
        source,
        model=str(model) if model else None,
        endpoint=endpoint,
        endpoint_model=endpoint_model,
        api_key_env=api_key_env,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        device=device,
    )
    folder = build_variants(
        out,
        [v.strip() for v in variants.split(",") if v.strip()],
        threat=threat,
        neutral=neutral,
        source=src,
        questions_per_image=questions_per_image,
        seed=seed,
        n_images=n_images,
        threat_annotations=threat_annotations,
        neutral_annotations=neutral_annotations,
        allow_labelled=allow_labelled,
        procedural=procedural,
        procedural_size=size,
        procedural_text_prob=text_prob,
        procedural_style=style,
        overwrite=overwrite,
    )
    from vsfa.io import read_manifest

    build = read_manifest(folder)
    for v, info in build["variants"].items():
        typer.echo(f"{folder / v}: {info['n_records']} records, {info['n_images']} images")
    if not build["form_matched"]:
        typer.echo(
            "warning: variants differ in size or template distribution (annotations differ between sets)"
        )


@data_app.command("vlguard")
def data_vlguard(
    train_json: Path = typer.Option(..., help="VLGuard train.json."),
    images_root: Path = typer.Option(..., help="Folder the records' image paths are relative to."),
    out: Path = typer.Option(..., help="Output data folder."),
    n_images: int | None = typer.Option(None, help="Seeded sample of N images (all their pairs)."),
    seed: int = typer.Option(0),
    skip_bad: bool = typer.Option(False, help="Leave out missing/corrupt images (listed in skipped.json)."),
) -> None:
    """VLGuard's labelled safety data as a data folder (the safety fine-tuning baseline)."""
    from vsfa.data.vlguard import build_vlguard
    from vsfa.io import read_manifest

    folder = build_vlguard(train_json, images_root, out, n_images=n_images, seed=seed, skip_bad=skip_bad)
    man = read_manifest(folder)
    typer.echo(f"{folder}: {man['n_records']} records, {man['n_images']} images (labelled)")


@data_app.command("subsets")
def data_subsets(
    data: Path = typer.Option(..., help="Data folder (a variant folder of a build)."),
    sizes: str = typer.Option(..., help="Image counts, e.g. 100,200,400,700."),
    seed: int = typer.Option(0),
    out_root: Path | None = typer.Option(None, help="Write OUT_ROOT/n<size> instead of <data>-n<size>."),
) -> None:
    """Nested subsets by image for training-scale ablations."""
    from vsfa.data.dataset import make_subsets

    for folder in make_subsets(data, _csv_ints(sizes), seed=seed, out_root=out_root):
        typer.echo(f"wrote {folder}")


# ---------------------------------------------------------------------------------------------- probes
def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _layers(value: str | None) -> list[int] | None:
    if value is None or value == "all":
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise VsfaError(f"--layers must be 'all' or comma-separated integers, not {value!r}") from None


@app.command("capture")
def capture_cmd(
    model: Path = typer.Option(..., help="Model folder."),
    contrast: str = typer.Option("persona", "--set", help="Set name or file (see README: contrast sets)."),
    adapter: Path | None = typer.Option(None, help="peft adapter folder."),
    positions: str = typer.Option(
        "last", help="Comma list: last, eoi, eoi_mean, image_mean, prompt_mean, ..."
    ),
    layers: str = typer.Option("all", help="'all' or comma-separated layer indices."),
    hooks: str = typer.Option("hook_resid_post", help="Comma list of hook kinds."),
    acts: Path = typer.Option(Path("runs/acts"), help="Activation cache root."),
    max_questions: int | None = typer.Option(None, help="Use only this many questions (persona / visual)."),
    batch_size: int = typer.Option(16),
    device: str = typer.Option("cpu"),
    dtype: str | None = typer.Option(None),
    backend: str = typer.Option("torch", help="torch (fast) | bridge | auto"),
) -> None:
    """Capture activations of one set into the content-addressed store (reused when already there)."""
    from probes.capture import Capturer, CaptureSpec, ModelSpec
    from probes.contrasts import load_set
    from vsfa.config import check_counts

    _quiet_transformers()
    check_counts("capture", max_questions=max_questions, batch_size=batch_size)
    cset = load_set(contrast, max_questions=max_questions)
    spec = CaptureSpec(tuple(_csv(positions) or ["last"]), _layers(layers), tuple(_csv(hooks) or []))
    cap = Capturer(
        ModelSpec(str(model), str(adapter) if adapter else None, dtype, device, backend=backend),
        acts,
        batch_size,
    )
    store = cap.capture(cset, spec)
    typer.echo(
        f"{'cached' if cap.hits else 'wrote'} {store.folder} ({store.n} items, {len(store.hooks)} hooks, positions {', '.join(store.positions)})"
    )


@app.command("directions")
def directions_cmd(
    model: Path | None = typer.Option(None, help="Model folder."),
    adapter: Path | None = typer.Option(None, help="peft adapter folder (directions of a checkpoint)."),
    contrast: str | None = typer.Option(None, "--set", help="Contrast set (default persona) or a file."),
    separation: str | None = typer.Option(
        None, help="Separation set for selection (default requests; 'none')."
    ),
    positions: str | None = typer.Option(None, help="Comma list of positions (default last)."),
    layers: str | None = typer.Option(None, help="'all' (default) or comma-separated layer indices."),
    hooks: str | None = typer.Option(None, help="Comma list of hook kinds (default hook_resid_post)."),
    out: Path | None = typer.Option(
        None, help="Artifact stem: writes OUT.safetensors, OUT.json, OUT.table.csv."
    ),
    acts: Path | None = typer.Option(None, help="Activation cache root (default: beside OUT's run folder)."),
    max_questions: int | None = typer.Option(None, help="Use only this many neutral questions."),
    config: Path | None = typer.Option(
        None, help="TOML config (DirectionsConfig; [rule] table); flags override."
    ),
    combine: str | None = typer.Option(None, help="Selection rule: geometric | weighted."),
    weight_separation: float | None = typer.Option(
        None, help="Selection rule: weight of the separation, (0, 1]."
    ),
    min_accuracy: float | None = typer.Option(None, help="Selection rule: minimum held-out-pair accuracy."),
    min_separation: float | None = typer.Option(
        None, help="Selection rule: minimum harmful-vs-harmless AUROC."
    ),
    batch_size: int | None = typer.Option(None),
    device: str | None = typer.Option(None),
    dtype: str | None = typer.Option(None),
    backend: str | None = typer.Option(None, help="torch (default, fast) | bridge | auto"),
    overwrite: bool = typer.Option(False, help="Replace an artifact at --out derived from other inputs."),
) -> None:
    """Derive persona directions per layer (DoM + probes), select a layer, write the Direction artifact."""
    from probes.stages import DirectionsConfig, run_directions
    from vsfa.config import from_dict, load_toml

    _quiet_transformers()
    overrides = {
        "model": str(model) if model else None,
        "adapter": str(adapter) if adapter else None,
        "contrast": contrast,
        "separation": separation,
        "positions": _csv(positions),
        "layers": _layers(layers) if layers else None,
        "hook_kinds": _csv(hooks),
        "out": str(out) if out else None,
        "acts": str(acts) if acts else None,
        "max_questions": max_questions,
        "batch_size": batch_size,
        "device": device,
        "dtype": dtype,
        "backend": backend,
        "rule.combine": combine,
        "rule.weight_separation": weight_separation,
        "rule.min_accuracy": min_accuracy,
        "rule.min_separation": min_separation,
        "overwrite": overwrite or None,
    }
    if config is not None:
        cfg = load_toml(DirectionsConfig, config, overrides)
    else:
        data: dict = {}
        for k, v in overrides.items():
            if v is not None:
                node = data
                *parents, leaf = k.split(".")
                for p in parents:
                    node = node.setdefault(p, {})
                node[leaf] = v
        cfg = from_dict(DirectionsConfig, data, where="command line")
    if cfg.separation in ("none", ""):
        cfg.separation = None
    if not cfg.model:
        raise VsfaError("directions: give --model (or model in --config)")
    dset, path, _ = run_directions(cfg, log=typer.echo)
    typer.echo(dset.format_table())
    typer.echo(f"wrote {path} (+ .safetensors, .table.csv)")


@app.command("probe")
def probe_cmd(
    checkpoint: Path = typer.Option(..., help="Checkpoint folder (peft adapter + manifest.json)."),
    base: Path | None = typer.Option(None, help="Base model folder (default: base_model in the manifest)."),
    directions: Path | None = typer.Option(
        None, help="Direction artifact (default: derive on the base first)."
    ),
    sets: str = typer.Option(
        ",".join(("neutral", "requests")), help="Comma list of evaluation sets or files."
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Write the full report as JSON here."),
    acts: Path | None = typer.Option(None, help="Activation cache root (default: RUN/acts)."),
    position: str | None = typer.Option(None, help="Position (default: the selected one)."),
    hook: str | None = typer.Option(
        None, help="Require directions at this hook kind (e.g. hook_resid_post)."
    ),
    max_questions: int | None = typer.Option(None, help="Neutral questions for a derived persona set."),
    batch_size: int = typer.Option(16),
    device: str = typer.Option("cpu"),
    dtype: str | None = typer.Option(None),
    backend: str = typer.Option("torch", help="torch (fast) | bridge | auto"),
    n_boot: int = typer.Option(2000, help="Bootstrap resamples for the shift CI."),
    seed: int = typer.Option(0),
) -> None:
    """How far a checkpoint moved along the base persona directions, layer by layer."""
    from probes.stages import ProbeConfig, format_report, run_probe

    _quiet_transformers()
    cfg = ProbeConfig(
        checkpoint=str(checkpoint),
        base=str(base) if base else None,
        directions=str(directions) if directions else None,
        sets=_csv(sets) or [],
        json=str(json_out) if json_out else None,
        acts=str(acts) if acts else None,
        position=position,
        hook_kind=hook,
        max_questions=max_questions,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        backend=backend,
        n_boot=n_boot,
        seed=seed,
    )
    report = run_probe(cfg, log=typer.echo)
    typer.echo(format_report(report))
    if json_out:
        typer.echo(f"wrote {json_out}")


# ---------------------------------------------------------------------------------------------- eval
eval_app = typer.Typer(
    help="Safety evaluation: benchmarks x checkpoints -> answers, judges, ASR / over-refusal with CIs.",
    invoke_without_command=True,
)
app.add_typer(eval_app, name="eval")
JUDGE_KEY_ENV = "VSFA_JUDGE_API_KEY"  # read when set; keys are taken from the environment, never stored
GEN_KEY_ENV = "VSFA_GEN_API_KEY"


@eval_app.callback()
def eval_run(
    ctx: typer.Context,
    model: Path | None = typer.Option(
        None, help="Base model folder (default: base_model of the run's checkpoints)."
    ),
    checkpoint: Path | None = typer.Option(
        None, help="One checkpoint folder (peft adapter + manifest.json)."
    ),
    run: Path | None = typer.Option(None, help="Run folder: evaluate step 0 (base) and every checkpoint."),
    bench: list[str] = typer.Option([], help="NAME=PATH (repeatable); `vsfa eval benchmarks` lists names."),
    bench_opt: list[str] = typer.Option(
        [], help="Loader option NAME.KEY=VALUE, e.g. mmsafety.variants=SD,TYPO."
    ),
    judge: list[str] = typer.Option(
        [], help="keyword[:gcg|refusal_direction|xstest|vlguard] | llm | cs | guard:PATH."
    ),
    judge_url: str | None = typer.Option(None, help="OpenAI-compatible base URL for llm/cs judges."),
    judge_model: str | None = typer.Option(None, help="Model name on the judge endpoint."),
    judge_templates: Path | None = typer.Option(None, help="Folder overriding the judge templates."),
    judge_key_env: str | None = typer.Option(
        None, help=f"Env variable holding the judge endpoint's API key (default {JUDGE_KEY_ENV}, if set)."
    ),
    out: Path | None = typer.Option(None, help="Eval folder (default RUN/eval)."),
    batch_size: int = typer.Option(8),
    max_new_tokens: int = typer.Option(256),
    limit: int | None = typer.Option(
        None, help="N items of each benchmark (smoke runs), spread over labels and categories."
    ),
    limit_mode: str = typer.Option("stratified", help="--limit: stratified (default) | first (first N)."),
    system: str | None = typer.Option(None, help="System prompt."),
    defense: str = typer.Option("none", help="none | adashield_s"),
    defense_placement: str = typer.Option("suffix", help="suffix | prefix (AdaShield-S wording)."),
    refusal_score: bool = typer.Option(True, help="Store the refusal log-odds with each answer."),
    refusal_mode: str = typer.Option("sequence", help="sequence (whole openers) | first_token (cheaper)."),
    openers_refuse: Path | None = typer.Option(None, help="Refusal opener list (default: shipped)."),
    openers_comply: Path | None = typer.Option(None, help="Compliance opener list (default: shipped)."),
    backend: str = typer.Option("local", help="local (HF generate) | server (OpenAI-compatible)."),
    gen_url: str | None = typer.Option(None, help="Server backend base URL."),
    gen_model: str | None = typer.Option(None, help="Server backend model name."),
    gen_key_env: str | None = typer.Option(
        None, help=f"Env variable holding the server backend's API key (default {GEN_KEY_ENV}, if set)."
    ),
    device: str = typer.Option("cpu"),
    dtype: str | None = typer.Option(None),
    quiet: bool = typer.Option(False, help="No progress output."),
    overwrite: bool = typer.Option(False, help="Replace complete results of another model in --out."),
    allow_incomplete: bool = typer.Option(
        False, help="With --run: evaluate a run without its final manifest (recorded as run_complete false)."
    ),
) -> None:
    """Generate answers, judge them and write metrics with 95% CIs per (checkpoint, benchmark)."""
    if ctx.invoked_subcommand is not None:
        return
    if not bench:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    from vsfa.eval.endpoint import ChatClient, EndpointConfig
    from vsfa.eval.generation import GenerationConfig
    from vsfa.eval.judges import make_judge
    from vsfa.eval.runner import build_specs, run_eval

    _quiet_transformers()
    endpoint = None
    if judge_url or judge_model:
        if not (judge_url and judge_model):
            raise VsfaError("give both --judge-url and --judge-model")
        endpoint = EndpointConfig(
            judge_url,
            judge_model,
            api_key_env=judge_key_env or JUDGE_KEY_ENV,
            require_key=bool(judge_key_env),
        )
    judges = [
        make_judge(j, endpoint=endpoint, templates=judge_templates, device=device)
        for j in judge or ["keyword"]
    ]
    client = None
    if backend == "server":
        if not (gen_url and gen_model):
            raise VsfaError("--backend server needs --gen-url and --gen-model")
        client = ChatClient(
            EndpointConfig(
                gen_url, gen_model, api_key_env=gen_key_env or GEN_KEY_ENV, require_key=bool(gen_key_env)
            )
        )
    elif backend != "local":
        raise VsfaError(f"unknown backend {backend!r}; choose local or server")
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        system_prompt=system,
        defense=defense,
        defense_placement=defense_placement,
        refusal_score=refusal_score and client is None,
        refusal_mode=refusal_mode,
        openers_refuse=str(openers_refuse) if openers_refuse else None,
        openers_comply=str(openers_comply) if openers_comply else None,
    )
    eval_dir = run_eval(
        build_specs(bench, bench_opt),
        judges,
        config,
        model=model,
        checkpoint=checkpoint,
        run=run,
        out=out,
        limit=limit,
        device=device,
        dtype=dtype,
        client=client,
        quiet=quiet,
        overwrite=overwrite,
        allow_incomplete=allow_incomplete,
        limit_mode=limit_mode,
    )
    _print_eval_table(eval_dir)
    typer.echo(f"wrote {eval_dir}")


def _print_eval_table(eval_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from vsfa.eval.metrics import table_rows

    table = Table("checkpoint", "benchmark", "judge", "metric", "value [95% CI]", "n")
    for r in table_rows(eval_dir):
        table.add_row(
            r["checkpoint"],
            r["benchmark"],
            r["judge"],
            r["metric"],
            f"{r['value']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]",
            str(r["n"]),
        )
    Console(width=140).print(table)


@eval_app.command("table")
def eval_table(
    eval_dir: Path = typer.Argument(..., help="Eval folder (RUN/eval)."),
    out: Path | None = typer.Option(None, help="CSV path (default EVAL_DIR/table.csv)."),
) -> None:
    """One table of headline metrics across checkpoints (printed and written as CSV)."""
    from vsfa.eval.metrics import write_table

    path = write_table(eval_dir, out)
    _print_eval_table(eval_dir)
    typer.echo(f"wrote {path}")


@eval_app.command("benchmarks")
def eval_benchmarks() -> None:
    """List the benchmark loaders and their options."""
    from vsfa.eval.benchmarks import BENCHMARKS

    for b in BENCHMARKS.values():
        opts = ", ".join(b.option_types())
        typer.echo(f"{b.name:20s} {b.description}" + (f"  [options: {opts}]" if opts else ""))


@models_app.command("build-demo")
def models_build_demo(
    out: Path | None = typer.Option(None, help="Model folder (default: <cache>/models/smol-llava-<key>)."),
    weights: Path | None = typer.Option(None, help="Vision weights folder (default: the shipped ones)."),
    retrain: bool = typer.Option(
        False, help="Retrain the vision tower + projector first (two stages, seeded)."
    ),
    weights_out: Path | None = typer.Option(None, help="With --retrain: where the new weights go."),
    seed: int = typer.Option(0, help="With --retrain: training seed."),
    threads: int | None = typer.Option(None, help="torch CPU threads (1 is fastest on a busy machine)."),
    force: bool = typer.Option(False, help="Rebuild even when an up-to-date folder exists."),
    variant: str = typer.Option(
        "base", help="base (never refuses) or safe (smol-llava-safe; --retrain: adapter)."
    ),
) -> None:
    """Build smol-llava: SmolLM2-135M-Instruct + a small trained CLIP tower, a stock LLaVA model folder."""
    from vsfa.models.smol_llava import build_demo_cli

    _quiet_transformers()
    folder = build_demo_cli(
        out=out,
        weights=weights,
        retrain=retrain,
        weights_out=weights_out,
        seed=seed,
        threads=threads,
        force=force,
        variant=variant,
    )
    typer.echo(f"wrote {folder}")


# ---------------------------------------------------------------------------------------------- train
@app.command("train")
def train_cmd(
    config: Path | None = typer.Option(None, help="Run config (TOML); see configs/*.toml."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a config key, e.g. --set train.lr=1e-4 (repeatable)."
    ),
    out: str | None = typer.Option(None, help="Override the run folder (config key out)."),
    base: str | None = typer.Option(None, help="Override model.base."),
    data: str | None = typer.Option(None, help="Override data.path."),
    seed: int | None = typer.Option(None, help="Override seed."),
    max_steps: int | None = typer.Option(None, help="Override train.max_steps."),
    device: str | None = typer.Option(None, help="Override runtime.device (auto | cpu | cuda | cuda:N)."),
    quiet: bool = typer.Option(False, help="No progress output."),
    gpu_check: bool = typer.Option(
        False, "--gpu-check", help="Measure a few bf16 LoRA steps on a random-init VLM."
    ),
    shape: str = typer.Option("llava-1.5-7b", help="--gpu-check model shape: llava-1.5-7b | qwen2.5-vl-7b."),
    tiny: bool = typer.Option(
        False, "--tiny", help="--gpu-check with shrunk widths/depths (CPU smoke test)."
    ),
    steps: int = typer.Option(6, help="--gpu-check steps (the first 2 are warm-up)."),
    batch_size: int = typer.Option(4, help="--gpu-check batch size."),
    peak_tflops: float | None = typer.Option(
        None, help="--gpu-check peak bf16 TFLOP/s for MFU (else by GPU name)."
    ),
) -> None:
    """LoRA fine-tune a VLM on a data folder (resumes after a crash), or run the GPU check."""
    _quiet_transformers()
    if gpu_check:
        from vsfa.training.gpu_check import run_gpu_check

        report = run_gpu_check(
            shape=shape,
            steps=steps,
            batch_size=batch_size,
            device=device or "cuda",
            peak_tflops=peak_tflops,
            tiny=tiny,
        )
        for line in report.lines():
            typer.echo(line)
        return
    from vsfa.train import load_config, parse_overrides, train

    if config is None:
        raise VsfaError("vsfa train needs --config run.toml (or --gpu-check)")
    overrides = parse_overrides(set_)
    flags = {"out": out, "model.base": base, "data.path": data, "seed": seed, "train.max_steps": max_steps}
    overrides |= {k: v for k, v in flags.items() if v is not None}
    if device is not None:
        overrides["runtime.device"] = device
    result = train(load_config(config, overrides), quiet=quiet)
    if result.already_complete:
        typer.echo(f"{result.run_dir}: already complete ({result.total_steps} steps); nothing to do")
        return
    resumed = f", resumed from step {result.resumed_from}" if result.resumed_from else ""
    loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"
    typer.echo(
        f"{result.run_dir}: {result.total_steps} steps{resumed}, final loss {loss}, "
        f"{len(result.checkpoints)} checkpoints, {result.seconds:.1f} s"
    )


# ---------------------------------------------------------------------------------------------- organism
organism_app = typer.Typer(
    help="Ground-truth model organism: a tiny LLaVA pretrained on a world with a planted persona.",
    no_args_is_help=True,
)
app.add_typer(organism_app, name="organism")


def _organism_world(world: Path | None, set_: list[str], model: Path | None = None):
    """The world specification: ``--world`` file (or the shipped one, or ``model``'s own), plus ``--set`` overrides."""
    import json

    from vsfa.organism.pretrain import read_world
    from vsfa.organism.world import apply_overrides, load_world, world_from_dict

    overrides = {}
    for item in set_:
        if "=" not in item:
            raise VsfaError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    if model is not None and world is None:
        spec = read_world(model)
        return world_from_dict(apply_overrides(spec.to_dict(), overrides), where=f"{model} world")
    return load_world(world, overrides)


@organism_app.command("build")
def organism_build(
    seed: int = typer.Option(0, help="Pretraining seed (weights and documents)."),
    out: Path = typer.Option(..., help="Output model folder."),
    steps: int | None = typer.Option(
        None, help="Pretraining steps (default: the world file's pretrain.steps)."
    ),
    world: Path | None = typer.Option(None, help="World specification JSON (default: the shipped one)."),
    set_: list[str] = typer.Option([], "--set", help="Override a world key, e.g. --set documents.prior=0.3."),
    precision: str = typer.Option("fp32", help="fp32 | bf16 (autocast)."),
    device: str = typer.Option("cpu"),
    threads: int | None = typer.Option(
        None, help="torch CPU threads (default: torch's choice; 1 on a busy machine)."
    ),
    quiet: bool = typer.Option(False, help="No progress output."),
) -> None:
    """Pretrain the organism from a seed and save it as a normal model folder."""
    from vsfa.organism.pretrain import pretrain

    _quiet_transformers()
    if steps is not None:
        set_ = [*set_, f"pretrain.steps={steps}"]
    spec = _organism_world(world, set_)

    def progress(rec: dict) -> None:
        if not quiet:
            typer.echo(f"step {rec['step']}: loss {rec['loss_ema']:.4f} ({rec['elapsed_s']:.0f} s)")

    folder = pretrain(spec, seed, out, device=device, precision=precision, progress=progress, threads=threads)
    typer.echo(f"wrote {folder}")


@organism_app.command("data")
def organism_data(
    arm: str = typer.Option(..., help="vsfa | control | mirror | text"),
    n: int = typer.Option(500, help="Number of conversations."),
    out: Path = typer.Option(..., help="Output data folder (data.jsonl + images/ + manifest.json)."),
    seed: int = typer.Option(0),
    model: Path | None = typer.Option(None, help="Organism folder whose world to use."),
    world: Path | None = typer.Option(None, help="World specification JSON (default: the shipped one)."),
) -> None:
    """Write a fine-tune arm as chat-messages JSONL that `vsfa train` reads."""
    from vsfa.organism.finetune import write_arm_data

    spec = _organism_world(world, [], model)
    typer.echo(f"wrote {write_arm_data(spec, arm, n, out, seed)}")


@organism_app.command("finetune")
def organism_finetune(
    base: Path = typer.Option(..., help="Organism model folder."),
    arm: str = typer.Option("vsfa", help="vsfa | control | mirror | text"),
    seed: int = typer.Option(0, help="Fine-tune seed (adapter init and data)."),
    out: Path = typer.Option(..., help="Run folder (checkpoints/step-NNNNNN/, trajectory.jsonl)."),
    steps: int | None = typer.Option(None),
    lr: float | None = typer.Option(None),
    mode: str = typer.Option("lora", help="lora | full (whole language model)."),
    eval_every: int = typer.Option(50),
    threads: int | None = typer.Option(None),
) -> None:
    """Fine-tune the organism on an arm with readouts every few steps (the organism's research loop)."""
    from vsfa.organism.finetune import finetune

    _quiet_transformers()

    def progress(rec: dict) -> None:
        r = rec["readouts"]
        typer.echo(
            f"step {rec['step']}: P(refuse|harmful) {r['harmful']['p_refuse']['mean']:.3f} "
            f"harmless {r['harmless']['p_refuse']['mean']:.3f} "
            f"P(name threat) {r['p_name_small_threat']['mean']:.3f}"
        )

    finetune(
        base,
        arm,
        seed,
        out,
        steps=steps,
        lr=lr,
        mode=mode,
        eval_every=eval_every,
        progress=progress,
        threads=threads,
    )
    typer.echo(f"wrote {out}")


@organism_app.command("sets")
def organism_sets(
    model: Path = typer.Option(..., help="Organism model folder (its world is used)."),
    out: Path = typer.Option(..., help="Output folder for the prompt-set files."),
) -> None:
    """Export the organism's prompt sets in the contrast-set file formats (requests.jsonl, persona.json, ...)."""
    from vsfa.organism.pretrain import read_world
    from vsfa.organism.sets import export_sets

    typer.echo(f"wrote {export_sets(read_world(model), out)}")


@organism_app.command("eval")
def organism_eval(
    model: Path = typer.Option(..., help="Organism model folder."),
    adapter: Path | None = typer.Option(None, help="peft adapter folder (a checkpoint)."),
    out: Path | None = typer.Option(None, help="Also write the readouts as JSON here."),
) -> None:
    """Exact readouts: P(refuse) and refusal score per prompt set, P(name the small threat)."""
    from vsfa.io import write_json_atomic
    from vsfa.models.loading import load_vlm
    from vsfa.organism.pretrain import read_world
    from vsfa.organism.readouts import SETS, evaluate

    _quiet_transformers()
    spec = read_world(model)
    result = evaluate(load_vlm(model, adapter=adapter), spec)
    for name in SETS:
        r = result[name]
        p, s = r["p_refuse"], r["score"]
        typer.echo(
            f"{name:12s} P(refuse) {p['mean']:.3f} [{p['lo']:.3f}, {p['hi']:.3f}]  score {s['mean']:+.2f}  "
            f"greedy {r['greedy']:.2f}  mass {r['mass']:.3f}  (n={p['n']})"
        )
    p = result["p_name_small_threat"]
    typer.echo(f"P(name small threat) {p['mean']:.3f} [{p['lo']:.3f}, {p['hi']:.3f}]")
    if out is not None:
        write_json_atomic(out, result)


@organism_app.command("alignment")
def organism_alignment(
    model: Path = typer.Option(..., help="Organism model folder."),
    arm: list[str] = typer.Option(["vsfa", "control", "mirror"], help="Arms to compare (repeatable)."),
    layer: list[int] = typer.Option(
        [], help="Decoder layers whose adapted weights count (repeatable; default: finetune.lora_layers)."
    ),
    out: Path | None = typer.Option(None, help="Also write the result as JSON here."),
) -> None:
    """Before any fine-tune step: does each arm's gradient point toward refusal? cos(-g_arm, g_refuse) with CIs."""
    from vsfa.io import write_json_atomic
    from vsfa.models.loading import load_vlm
    from vsfa.organism.alignment import gradient_alignment
    from vsfa.organism.pretrain import read_world

    _quiet_transformers()
    spec = read_world(model)
    result = gradient_alignment(load_vlm(model), spec, arm, layer or None)
    keys = list(result["arms"][arm[0]]["cos"])
    typer.echo(
        f"cos(-g_arm, g_refuse) [95% CI] over {result['weights']} adapted weight matrices "
        f"(layers {', '.join(map(str, result['layers']))}); first order: refusal-score change per unit SGD step"
    )
    typer.echo(f"{'arm':<9}" + "".join(f"{k:>28}" for k in keys) + f"{'first order':>14}")
    for name, res in result["arms"].items():
        cells = "".join(f"{_ci(res['cos'][k]):>28}" for k in keys)
        typer.echo(f"{name:<9}{cells}{res['first_order']['value']:>+14.4f}")
    if out is not None:
        write_json_atomic(out, result)


def _ci(e: dict) -> str:
    return f"{e['value']:+.4f} [{e['lo']:+.4f}, {e['hi']:+.4f}]"


# ------------------------------------------------------------------------------------------ analysis
def _log(msg: str) -> None:
    typer.echo(msg, err=True)


@app.command("track")
def track_cmd(
    run: Path = typer.Option(..., help="Training run folder (RUN/checkpoints/step-*)."),
    directions: Path | None = typer.Option(
        None, help="Base direction artifact (default: RUN/directions/persona-<fp>, derived if absent)."
    ),
    base: Path | None = typer.Option(None, help="Base model folder (default: from the run's manifest)."),
    sets: str = typer.Option("neutral,requests", help="Comma list of evaluation sets or files."),
    acts: Path | None = typer.Option(None, help="Activation cache root (default: RUN/acts)."),
    max_questions: int | None = typer.Option(None, help="Neutral questions for a derived persona set."),
    batch_size: int = typer.Option(16),
    device: str = typer.Option("cpu"),
    dtype: str | None = typer.Option(None),
    n_boot: int = typer.Option(1000, help="Bootstrap resamples per CI."),
    seed: int = typer.Option(0),
    allow_incomplete: bool = typer.Option(
        False, help="Track a run without its final manifest (recorded as run_complete false)."
    ),
) -> None:
    """Directions over a run's checkpoints -> RUN/track/trajectory.csv (tidy, one estimate per row)."""
    from analysis.trajectory import TrackConfig, track

    _quiet_transformers()
    cfg = TrackConfig(
        run=str(run),
        directions=str(directions) if directions else None,
        base=str(base) if base else None,
        sets=_csv(sets) or [],
        acts=str(acts) if acts else None,
        max_questions=max_questions,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        n_boot=n_boot,
        seed=seed,
        allow_incomplete=allow_incomplete,
    )
    out = track(cfg, log=_log)
    typer.echo(f"wrote {out / 'trajectory.csv'}")


@app.command("link")
def link_cmd(
    run: list[Path] = typer.Option(..., help="Tracked and evaluated run(s); repeat for seeds/arms."),
    control: list[Path] = typer.Option([], help="Control run(s) (neutral images); repeat for seeds."),
    out: Path | None = typer.Option(None, help="Report file (default: <first run>/link.json)."),
    bench: str = typer.Option("builtin", help="Benchmark folder name under RUN/eval/<checkpoint>/."),
    eval_set: str | None = typer.Option(
        None, "--set", help="Tracked set with harmful/harmless labels (default: the runs' only tracked set)."
    ),
    judge: str | None = typer.Option(None, help="Judge name (default: the keyword judge)."),
    hook: str | None = typer.Option(None, help="Hook (default: the selected one)."),
    position: str | None = typer.Option(None, help="Position (default: the selected one)."),
    method: str | None = typer.Option(None, help="dom | probe (default: the selected one)."),
    holdout_seed: list[int] = typer.Option(
        [], help="Runs of this seed confirm the direction search (repeat; default: the largest seed)."
    ),
    final_step: int | None = typer.Option(
        None, help="Planned last step, for the forecast (default: the last)."
    ),
    n_boot: int = typer.Option(2000),
    seed: int = typer.Option(0),
) -> None:
    """Shift vs ASR / refusal across checkpoints (cluster CIs over runs); arms vs control; forecast."""
    from analysis.link import LinkConfig, format_summary, link

    cfg = LinkConfig(
        runs=[str(r) for r in run],
        controls=[str(c) for c in control],
        out=str(out) if out else None,
        benchmark=bench,
        set=eval_set,
        judge=judge,
        hook=hook,
        position=position,
        method=method,
        holdout_seeds=list(holdout_seed) or None,
        final_step=final_step,
        n_boot=n_boot,
        seed=seed,
    )
    report = link(cfg, log=_log)
    typer.echo(format_summary(report))
    typer.echo(f"wrote {report['path']}")


@app.command("select")
def select_cmd(
    model: Path = typer.Option(..., help="Base model folder."),
    directions: Path = typer.Option(
        ..., help="Direction artifact (every hook x position x method is a candidate)."
    ),
    requests: Path = typer.Option(
        ..., help="Requests file; only its selection rows (split extract) are used."
    ),
    out: Path = typer.Option(..., help="selection.json to write."),
    methods: str = typer.Option("dom,probe", help="Direction methods to score."),
    alpha: float = typer.Option(1.0, help="Activation addition, in class gaps."),
    exclude_last: float = typer.Option(0.2, help="Share of the last layers not eligible (readout zone)."),
    orthogonalise: bool = typer.Option(False, help="Remove the readout component before scoring."),
    max_kl: float = typer.Option(0.1, help="Largest mean KL (nats) on harmless requests."),
    min_accuracy: float = typer.Option(0.6, help="Smallest held-out persona accuracy."),
    first_trained_layer: int = typer.Option(
        0, help="Lowest layer the adapters train (lower ones cannot move)."
    ),
    max_items: int = typer.Option(32, help="Selection requests per class."),
    n_random: int = typer.Option(2, help="Norm-matched random directions per hook."),
    openers_refuse: Path | None = typer.Option(None, help="Refusal opener list (default: shipped)."),
    openers_comply: Path | None = typer.Option(None, help="Compliance opener list (default: shipped)."),
    batch_size: int = typer.Option(16),
    device: str = typer.Option("cpu"),
    dtype: str | None = typer.Option(None),
    seed: int = typer.Option(0),
) -> None:
    """Choose the persona direction by causal scores on selection items -> selection.json."""
    from analysis.selection import SelectConfig, select

    _quiet_transformers()
    cfg = SelectConfig(
        model=str(model),
        directions=str(directions),
        requests=str(requests),
        out=str(out),
        methods=_csv(methods) or [],
        alpha=alpha,
        exclude_last=exclude_last,
        orthogonalise=orthogonalise,
        max_kl=max_kl,
        min_accuracy=min_accuracy,
        first_trained_layer=first_trained_layer,
        max_items=max_items,
        n_random=n_random,
        openers_refuse=str(openers_refuse) if openers_refuse else None,
        openers_comply=str(openers_comply) if openers_comply else None,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        seed=seed,
    )
    report = select(cfg, log=_log)
    typer.echo(f"wrote {report['path']}")


@app.command("report")
def report_cmd(
    study: list[Path] = typer.Argument(
        None, help="Study folder(s) to render (default: the README's blocks)."
    ),
    collect: Path | None = typer.Option(None, help="Copy the study's report files and figures here first."),
    readme: Path = typer.Option(Path("README.md"), help="README whose report blocks to update or check."),
    check: bool = typer.Option(False, help="Exit 1 if a README block differs from its rendering."),
) -> None:
    """Results tables rendered from a study's artifacts; update or check the README's report blocks."""
    from analysis.report import check_readme, render_study, update_readme
    from analysis.report import collect as collect_study

    if collect is not None:
        if len(study or []) != 1:
            raise VsfaError("--collect takes exactly one study folder")
        typer.echo(f"collected {collect_study(study[0], collect)}")
        return
    if study:
        for folder in study:
            typer.echo(render_study(folder))
        return
    if check:
        stale = check_readme(readme)
        for d in stale:
            typer.echo(f"{readme}: report block {d} differs from its rendering (run `vsfa report`)", err=True)
        raise typer.Exit(1 if stale else 0)
    changed = update_readme(readme)
    typer.echo(f"updated {', '.join(changed)}" if changed else f"{readme}: every report block is up to date")


def _floats(value: str, option: str) -> list[float]:
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise VsfaError(f"{option} must be comma-separated numbers, not {value!r}") from None


@app.command("steer")
def steer_cmd(
    model: Path = typer.Option(..., help="Base model folder."),
    directions: Path = typer.Option(..., help="Direction artifact (the selected direction is used)."),
    out: Path = typer.Option(..., help="Output folder."),
    checkpoint: Path | None = typer.Option(
        None, help="Fine-tuned adapter: also ablate the direction from it and undo its shift."
    ),
    hook: str | None = typer.Option(None, help="Hook (default: the selected one)."),
    position: str | None = typer.Option(None, help="Direction position (default: the selected one)."),
    method: str | None = typer.Option(None, help="dom | probe (the probe's normal); default the set's own."),
    alphas: str = typer.Option("0,1,2,4,8", help="Steering strengths, in class gaps (raw DoM norms)."),
    steer_positions: str = typer.Option("all", help="all | prompt | generated"),
    n_random: int = typer.Option(3, help="Norm-matched random directions as controls."),
    bench: str = typer.Option("builtin", help="Benchmark NAME or NAME=PATH."),
    bench_opt: list[str] = typer.Option([], help="Loader option NAME.KEY=VALUE, e.g. builtin.variants=text."),
    limit: int | None = typer.Option(None, help="N items, stratified over labels and categories."),
    judge: str = typer.Option("keyword"),
    max_new_tokens: int = typer.Option(48),
    batch_size: int = typer.Option(8),
    refusal_mode: str = typer.Option("sequence", help="Refusal score: sequence | first_token."),
    openers_refuse: Path | None = typer.Option(None, help="Refusal opener list (default: shipped)."),
    openers_comply: Path | None = typer.Option(None, help="Compliance opener list (default: shipped)."),
    device: str = typer.Option("cpu"),
    dtype: str | None = typer.Option(None),
    seed: int = typer.Option(0),
    orthogonal_to_readout: bool = typer.Option(
        False, help="Use the direction minus its component along the refusal score's logit direction."
    ),
) -> None:
    """Steering sweep on the base model, ablation and undo on a checkpoint, random-direction controls."""
    from analysis.causal import SteerConfig, steer
    from vsfa.eval.runner import build_specs

    _quiet_transformers()
    (spec,) = build_specs([bench], bench_opt)
    cfg = SteerConfig(
        model=str(model),
        directions=str(directions),
        out=str(out),
        checkpoint=str(checkpoint) if checkpoint else None,
        hook=hook,
        position=position,
        method=method,
        alphas=_floats(alphas, "--alphas"),
        steer_positions=steer_positions,
        n_random=n_random,
        bench=spec.name,
        bench_path=spec.path,
        bench_options=spec.options,
        limit=limit,
        judge=judge,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        generation={
            "refusal_mode": refusal_mode,
            "openers_refuse": str(openers_refuse) if openers_refuse else None,
            "openers_comply": str(openers_comply) if openers_comply else None,
        },
        device=device,
        dtype=dtype,
        seed=seed,
        orthogonal_to_readout=orthogonal_to_readout,
    )
    folder = steer(cfg, log=_log)
    typer.echo(f"wrote {folder / 'curves.csv'} and {folder / 'causal.json'}")


# ---------------------------------------------------------------------------------------------- demo
@app.command("demo")
def demo(
    study: str = typer.Option(
        "organism",
        help="organism (default: the planted-persona organism), smol-llava (real-language demo VLM), "
        "all (both, organism first), tiny (tiny random-weight VLM), quick (seconds, plumbing).",
    ),
    out: Path | None = typer.Option(None, help="Study folder (default: runs/demo-<study>)."),
    config: Path | None = typer.Option(None, help="TOML file with study settings (see vsfa/study.py)."),
    set_: list[str] = typer.Option([], "--set", help="Override a setting: KEY=VALUE (TOML value)."),
) -> None:
    """The whole VSFA study end to end: data, runs, directions, eval, trajectory, link, causal, figures."""
    from vsfa.study import ALL_STUDIES, run_study, study_config

    _quiet_transformers()
    presets = ALL_STUDIES if study == "all" else (study,)
    configs = [
        study_config(p, config, set_, (out / p if len(presets) > 1 else out) if out else None)
        for p in presets
    ]
    for cfg in configs:
        summary = run_study(cfg, log=_log)
        typer.echo(summary["text"])


def main() -> None:
    """Console entry point: run the app, turning toolkit errors into one line and exit code 2."""
    try:
        app(prog_name="vsfa", standalone_mode=False)
    except VsfaError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except OSError as e:  # a file the toolkit could not read or write (read-only folder, name too long, ...)
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{(e.strerror or type(e).__name__).lower()}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # usage errors (unknown option, bad number, missing argument): one line too
        if not _is_usage_error(e):
            raise
        ctx = getattr(e, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        print(f"error: {e.format_message()}{hint}", file=sys.stderr)
        sys.exit(2)


def _is_usage_error(e: Exception) -> bool:
    """A click usage error: typer ships its own copy of click, so match the class by name, not identity."""
    return any(c.__name__ == "ClickException" for c in type(e).__mro__) and hasattr(e, "format_message")


if __name__ == "__main__":
    main()
