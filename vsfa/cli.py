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
