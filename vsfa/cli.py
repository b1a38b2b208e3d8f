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
    help="VSFA toolkit: train Visual Self-Fulfilling Alignment and explain it.", no_args_is_help=True
)
models_app = typer.Typer(help="Model registry, tiny offline models, fidelity checks.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

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
) -> None:
    """Render procedural threat/neutral scenes with exact annotations (same seed: same layout)."""
    from vsfa.data.images import write_procedural_set

    folder = write_procedural_set(kind, n, out, seed=seed, size=size, text_prob=text_prob)
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
    batch_size: int = typer.Option(8, help="Generation batch size (source 'self')."),
    max_new_tokens: int = typer.Option(96, help="Answer length limit (sources 'self', 'endpoint')."),
    device: str = typer.Option("cpu", help="Device for source 'self'."),
    allow_labelled: bool = typer.Option(False, help="Keep targets that fail the label-free lint (recorded)."),
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
    )
    from vsfa.io import read_manifest

    for v, info in read_manifest(folder)["variants"].items():
        typer.echo(f"{folder / v}: {info['n_records']} records, {info['n_images']} images")


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


# ---------------------------------------------------------------------------------------------- demo
@app.command("demo")
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Run folder."),
    family: str = typer.Option("llava", help="Tiny model family for the quick demo."),
) -> None:
    """Run the main job end to end (for now: build a tiny VLM, load, hook, per-layer summary)."""
    from probes.summary import layer_summary
    from vsfa.models.tiny import save_tiny

    _quiet_transformers()
    model_dir = out / "models" / f"tiny-{family}"
    save_tiny(family, model_dir)
    typer.echo(f"built tiny {family} VLM at {model_dir}")
    typer.echo(layer_summary(model_dir))


def main() -> None:
    """Console entry point: run the app, turning toolkit errors into one line and exit code 2."""
    try:
        app(standalone_mode=False)
    except VsfaError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
