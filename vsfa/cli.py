"""The ``vsfa`` command: a table of commands, each a stage's config dataclass, run function and printer.

Options are generated from the config dataclasses by :mod:`vsfa.clikit` (see its docstring for the rules:
``--config FILE.toml``, ``--set a.b=value``, dotted flags for nested sections, repeatable lists).
Every :class:`~vsfa.errors.VsfaError` becomes one line on stderr (``error: ...``) and exit code 2.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from vsfa.clikit import Command, Preset, build, build_group, quiet_option, setup_logging
from vsfa.errors import VsfaError

HELP = "VSFA toolkit: train Visual Self-Fulfilling Alignment and explain it."
GROUPS = {
    "models": "Model registry, tiny offline models, fidelity checks.",
    "data": "VSFA data: procedural images, image manifests, VQA builds, VLGuard, subsets.",
    "eval": "Safety evaluation: benchmarks x checkpoints -> answers, judges, ASR / over-refusal with CIs.",
    "train": "LoRA fine-tune a VLM on a data folder (resumes after a crash); `train gpu-check` measures a GPU.",
    "organism": "Ground-truth model organism: a tiny LLaVA pretrained on a world with a planted persona.",
}
STUDY_HELP = (
    "organism (default: the planted-persona organism), smol-llava (real-language demo VLM; never refuses), "
    "smol-llava-safe (the same on its safety-tuned variant, which refuses half of harmful requests), "
    "all (organism, then smol-llava-safe), tiny (tiny random-weight VLM), quick (seconds, plumbing)."
)


def _ref(dotted: str) -> Any:
    """``"pkg.module:name"`` -> the object, imported on first use (``vsfa --help`` stays fast)."""
    module, name = dotted.split(":")
    return getattr(importlib.import_module(module), name)


def _text(result: Any) -> str | None:
    return result if isinstance(result, str) else None


def _wrote(*files: str):
    return lambda folder: "wrote " + " and ".join(str(folder / f) for f in files)


def _eval_show(folder: Any) -> str:
    return f"{_ref('vsfa.eval.metrics:format_table')(folder)}\nwrote {folder}"


def _directions_show(result: Any) -> str:
    dset, path, _ = result
    return f"{dset.format_table()}\nwrote {path} (+ .safetensors, .table.csv)"


def _probe_show(report: Any) -> str:
    text = _ref("probes.stages:format_report")(report)
    return f"{text}\nwrote {report['json']}" if report.get("json") else text


def _link_show(report: Any) -> str:
    return f"{_ref('analysis.link:format_summary')(report)}\nwrote {report['path']}"


def C(module: str, config: str, run: str, show: Any = _text, **extra: Any) -> dict[str, Any]:
    """A table entry: config class and run function (names in ``module``), printer (a callable or a name in
    ``module``), and further :class:`~vsfa.clikit.Command` settings."""
    return {"module": module, "config": config, "run": run, "show": show, **extra}


TABLE: dict[str, dict[str, Any]] = {
    "models list": C("vsfa.models.registry", "ListConfig", "list_families"),
    "models tiny": C("vsfa.models.tiny", "TinyConfig", "run_tiny"),
    "models check": C(
        "probes.fidelity",
        "FidelityConfig",
        "run_check",
        lambda v: v.text(),
        args=("path",),
        exit_code=lambda v: int(not v.ok),
    ),
    "models summary": C("probes.summary", "SummaryConfig", "run_summary", args=("path",)),
    "models build-demo": C("vsfa.models.smol_llava", "BuildDemoConfig", "run_build_demo"),
    "data images": C("vsfa.data.images", "ImagesConfig", "run_images"),
    "data manifest": C("vsfa.data.images", "ManifestConfig", "run_manifest"),
    "data build": C("vsfa.data.build", "BuildConfig", "run_build", "format_build"),
    "data vlguard": C("vsfa.data.vlguard", "VlguardConfig", "run_vlguard"),
    "data subsets": C("vsfa.data.dataset", "SubsetsConfig", "run_subsets"),
    "capture": C(
        "probes.capture",
        "CaptureConfig",
        "run_capture",
        help="Capture activations of one set into the store.",
    ),
    "directions": C(
        "probes.stages",
        "DirectionsConfig",
        "run_directions",
        _directions_show,
        help=(
            "Derive persona directions per layer (DoM + probes), select a layer, write the Direction artifact."
        ),
    ),
    "probe": C(
        "probes.stages",
        "ProbeConfig",
        "run_probe",
        _probe_show,
        help=("How far a checkpoint moved along the base persona directions, layer by layer."),
    ),
    "eval": C("vsfa.eval.runner", "EvalConfig", "run_eval_config", _eval_show),
    "eval table": C("vsfa.eval.metrics", "TableConfig", "run_table", args=("eval_dir",)),
    "eval benchmarks": C("vsfa.eval.benchmarks", "ListConfig", "list_benchmarks"),
    "train": C("vsfa.training.config", "TrainConfig", "run_train"),
    "train gpu-check": C("vsfa.training.gpu_check", "GpuCheckConfig", "run_gpu_check_config"),
    "organism build": C("vsfa.organism.pretrain", "OrganismBuildConfig", "run_build"),
    "organism data": C("vsfa.organism.finetune", "OrganismDataConfig", "run_data"),
    "organism finetune": C("vsfa.organism.finetune", "OrganismFinetuneConfig", "run_finetune"),
    "organism sets": C("vsfa.organism.sets", "OrganismSetsConfig", "run_sets"),
    "organism eval": C("vsfa.organism.readouts", "OrganismEvalConfig", "run_eval"),
    "organism alignment": C("vsfa.organism.alignment", "AlignmentConfig", "run_alignment"),
    "track": C(
        "analysis.trajectory",
        "TrackConfig",
        "track",
        _wrote("trajectory.csv"),
        help=(
            "Directions over a run's checkpoints -> RUN/track/trajectory.csv (tidy, one estimate per row)."
        ),
    ),
    "link": C(
        "analysis.link",
        "LinkConfig",
        "link",
        _link_show,
        help=(
            "Shift vs ASR / refusal across checkpoints (cluster CIs over runs); arms vs control; forecast."
        ),
    ),
    "select": C(
        "analysis.selection",
        "SelectConfig",
        "select",
        lambda r: f"wrote {r['path']}",
        help=("Choose the persona direction by causal scores on selection items -> selection.json."),
    ),
    "steer": C(
        "analysis.causal",
        "SteerConfig",
        "steer",
        _wrote("curves.csv", "causal.json"),
        help=(
            "Steering sweep on the base model, ablation and undo on a checkpoint, random-direction controls."
        ),
    ),
    "report": C(
        "analysis.report",
        "ReportConfig",
        "run_report",
        lambda r: r.text,
        args=("study",),
        exit_code=lambda r: r.code,
        help="Results tables rendered from a study's artifacts; update or check the README's report blocks.",
    ),
    "bench": C(
        "vsfa.perf.bench",
        "BenchConfig",
        "run_bench",
        "format_bench",
        help="Speed and memory measures, each against a baseline run alongside, with goals -> a table and JSON.",
    ),
    "demo": C(
        "vsfa.study",
        "StudyConfig",
        "run_study",
        lambda s: s["text"],
        preset=("study", "organism", STUDY_HELP, "study_configs"),
        help=(
            "The whole VSFA study end to end: data, runs, directions, eval, trajectory, link, causal, figures."
        ),
    ),
}


def command(name: str) -> Command:
    """The :class:`~vsfa.clikit.Command` of table entry ``name`` (imports its stage module)."""
    entry = dict(TABLE[name])
    module = importlib.import_module(entry.pop("module"))
    config, run, show = (
        getattr(module, entry.pop(k)) if isinstance(entry[k], str) else entry.pop(k)
        for k in ("config", "run", "show")
    )
    if "preset" in entry:
        flag, default, help_, resolve = entry["preset"]
        entry["preset"] = Preset(flag, default, help_, getattr(module, resolve))
    return Command(name, config, run, show, **entry)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3].rsplit(" ", 1)[0] + "..."


class LazyGroup(click.Group):
    """A group whose commands are built from :data:`TABLE` on first use (``vsfa --help`` imports no stage)."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from :data:`GROUPS` and the table's help texts (no stage module is imported)."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names))
        rows = [(n, _short(GROUPS.get(n) or TABLE[n]["help"], limit)) for n in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({k.split(" ")[0] for k in TABLE})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in GROUPS:
            subs = {
                k.split(" ")[1]: build(command(k), k.split(" ")[1]) for k in TABLE if k.startswith(f"{name} ")
            }
            main = command(name) if name in TABLE else None
            return build_group(name, GROUPS[name], subs, main, help_if_bare=name != "data")
        return build(command(name), name) if name in TABLE else None


def _quiet_transformers() -> None:
    """transformers' own logging at ERROR, no hub progress bars (by environment: importing it costs seconds)."""
    import os
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notices, not ours
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # already imported (in-process callers): set it directly
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def app() -> click.Group:
    """The root ``vsfa`` group."""
    return LazyGroup("vsfa", help=HELP, no_args_is_help=True, params=[quiet_option()])


def docs(width: int = 100) -> str:
    """``docs/cli.md``: every command's help, from the configs (``python -m vsfa.cli --docs > docs/cli.md``)."""
    import vsfa.clikit

    parts = [
        "# The `vsfa` command\n",
        "Generated from the stage configs by `vsfa.cli.docs()`; do not edit.\n",
    ]
    parts.append(vsfa.clikit.CONVENTIONS)
    root = app()
    for name in ["", *TABLE]:
        cmd, ctx = root, click.Context(root, info_name="vsfa", terminal_width=width, max_content_width=width)
        for word in name.split():
            cmd = cmd.get_command(ctx, word)
            ctx = click.Context(cmd, info_name=word, parent=ctx)
        parts.append(f"## `vsfa {name}`\n\n```text\n{cmd.get_help(ctx)}\n```\n".replace("`vsfa `", "`vsfa`"))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: offline defaults, logging, the app; toolkit errors as one line and exit code 2."""
    from vsfa.env import apply_offline_defaults

    apply_offline_defaults()
    setup_logging()
    _ref("vsfa.threads:apply_threads")()  # torch threads from the free cores (VSFA_THREADS overrides)
    _quiet_transformers()
    try:
        app().main(args=argv, prog_name="vsfa", standalone_mode=False)
    except VsfaError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as e:  # a bare group name: its help
        print(e.format_message())
    except click.ClickException as e:  # usage errors (unknown option, bad number, missing argument): one line
        ctx = getattr(e, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        print(f"error: {e.format_message()}{hint}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # a file the toolkit could not read or write (read-only folder, name too long, ...)
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{(e.strerror or type(e).__name__).lower()}", file=sys.stderr)
        sys.exit(2)
    finally:
        _ref("vsfa.distributed:shutdown")()


if __name__ == "__main__":
    print(docs(), end="") if sys.argv[1:] == ["--docs"] else main()
