"""``vsfa demo``: the whole VSFA study end to end, every stage through the toolkit's own artifacts.

model -> data (threat / neutral / text variants) -> one training run per arm and seed (log-spaced checkpoints)
-> base persona directions -> evaluation of every checkpoint on the built-in harmful/harmless set -> trajectory
per run -> link (shift vs safety, VSFA vs control) -> causal checks (steering on the base, ablation on the final
VSFA checkpoint, random controls) -> figures -> summary table.

Study folder layout::

    STUDY/model/ data/ acts/ directions/persona.{json,safetensors}
    STUDY/runs/<arm>-s<seed>/   (checkpoints/, eval/, track/)
    STUDY/link.json  STUDY/steer/  STUDY/figures/  STUDY/summary.md  STUDY/summary.json

Every stage reuses what is complete (data, runs, activation cache, evaluations), so a rerun is cheap.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vsfa.errors import ConfigError
from vsfa.io import is_complete, write_json_atomic, write_manifest, write_text_atomic
from vsfa.parallel import Task, run_tasks
from vsfa.threads import ThreadChoice, apply_threads

if TYPE_CHECKING:
    from vsfa.eval.generation import GenerationConfig

logger = logging.getLogger(__name__)
ARM_VARIANTS = {"vsfa": "image", "control": "control", "text": "text", "mixed": "mixed"}
ORGANISM_ARMS = ("vsfa", "control", "mirror", "text")
MAX_AUTO_WORKERS = 4  # workers = 0: one process per free core, at most this many (each loads the model)
SETS = "sets"  # organism studies: STUDY/sets/organism_{requests,context}.jsonl (`vsfa organism sets`)


@dataclass
class StudyConfig:
    """A study's settings (TOML-loadable). ``model``: ``tiny:<family>``, ``organism`` (the shipped base),
    ``smol-llava`` or a model folder."""

    out: str = "runs/demo"
    """Study folder."""
    model: str = "tiny:llava"
    """tiny:<family> | organism | smol-llava | a model folder."""
    data: str = "procedural"
    """Procedural (threat / neutral scenes) | organism (the organism's arms and sets)."""
    organism_n: int = 512
    """Organism: conversations per arm."""
    arms: list[str] = field(default_factory=lambda: ["vsfa", "control", "text"])
    """Arms to train (vsfa and controls)."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """LoRA seeds per arm."""
    images: int = 24
    """Procedural images per class."""
    image_size: int = 32
    """Procedural image side in pixels."""
    image_style: str = "scene"
    """scene | icon"""
    questions_per_image: int = 3
    """Questions per image."""
    steps: int = 48
    """Training steps per run."""
    batch_size: int = 4
    """Training batch size."""
    lr: float = 3e-3
    """Learning rate."""
    scheduler: str = "cosine"
    """transformers scheduler name."""
    warmup: float = 0.0
    """No warm-up: with few steps the first checkpoint would otherwise equal the base."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA alpha."""
    log_until: int = 32
    """Log-spaced checkpoints up to this step."""
    log_base: float = 2.0
    """Base of the log-spaced checkpoints."""
    every: int = 0
    """A checkpoint every N steps (0: none)."""
    persona_questions: int | None = 12
    """Neutral questions of the persona contrast set (unset: all)."""
    contrast: str = "persona"
    """Organism: its context set (vigilant vs carefree evidence before a request)."""
    # the harmful/harmless request set, split by pair into selection items (layer search, candidate scores)
    # and evaluation items (tracking, link, evaluation, steering): nothing reported is computed on the former
    requests: str = "requests"
    """Harmful/harmless request set, split by pair into selection and evaluation items."""
    split_key: str = "pair"
    """Group column of the split."""
    split_seed: int = 0
    """Split seed."""
    split_fraction: float = 0.5
    """Share of groups in evaluation (a file with its own split column keeps it)."""
    # causal candidate selection (analysis.selection), on the selection items of the base model
    select_methods: list[str] = field(default_factory=lambda: ["dom", "probe"])
    """Direction methods scored by the causal selection."""
    exclude_last: float = 0.2
    """Share of the last layers not eligible."""
    orthogonalise: bool = False
    """Remove the readout component before scoring."""
    max_kl: float = 0.1
    """Largest mean KL (nats) on harmless requests."""
    min_accuracy: float = 0.6
    """Smallest held-out persona accuracy."""
    select_items: int = 32
    """Selection requests per class."""
    track_pairs: int | None = None
    """Request pairs tracked (unset: all)."""
    track_questions: int | None = None
    """Persona-contrast questions measured at every checkpoint (unset: the directions' own)."""
    openers: list[str] | None = None
    """[refusal, compliance] opener files for the refusal score."""
    refusal_mode: str = "sequence"
    """Sequence | first_token."""
    eval_pairs: int | None = 8
    """Request pairs evaluated (unset: all)."""
    eval_variants: list[str] = field(default_factory=lambda: ["text", "neutral"])
    """Builtin benchmark variants."""
    max_new_tokens: int = 16
    """Answer length limit."""
    alphas: list[float] = field(default_factory=lambda: [0.0, 2.0, 4.0, 8.0])
    """Steering strengths, in class gaps."""
    n_random: int = 2
    """Random directions as controls."""
    steer_pairs: int | None = 6
    """Request pairs steered (unset: all)."""
    batch: int = 16
    """Forward batch size."""
    device: str = "cpu"
    """torch device."""
    figures: bool = True
    """Draw the figures."""
    workers: int = 1
    """Processes running runs side by side (0: one per free CPU core, at most 4; 1 on a GPU)."""

    def check(self) -> None:
        if self.data not in ("procedural", "organism"):
            raise ConfigError(f"data must be procedural or organism, not {self.data!r}")
        known = ORGANISM_ARMS if self.data == "organism" else tuple(ARM_VARIANTS)
        bad = [a for a in self.arms if a not in known]
        if bad:
            raise ConfigError(f"unknown arm {bad[0]!r}; choose from {', '.join(known)}")
        if "vsfa" not in self.arms:
            raise ConfigError("a study needs the vsfa arm")
        if not self.seeds:
            raise ConfigError("a study needs at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct, not {self.seeds}")
        if not 0 < self.split_fraction < 1:
            raise ConfigError(f"split_fraction must be in (0, 1), not {self.split_fraction}")
        for name in ("steps", "batch_size", "batch", "max_new_tokens", "select_items", "organism_n"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0 (0: one per free core), not {self.workers}")
        for name in ("eval_pairs", "track_pairs", "track_questions", "steer_pairs", "persona_questions"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1 (or unset for all), not {value}")
        if self.n_random < 0:
            raise ConfigError(f"n_random must be >= 0, not {self.n_random}")


STUDIES: dict[str, dict[str, Any]] = {
    # seconds on 2 CPU cores: plumbing on a random-weight model, used by the test suite
    "quick": {
        "out": "runs/demo-quick",
        "arms": ["vsfa", "control"],
        "images": 8,
        "steps": 8,
        "log_until": 4,
        "persona_questions": 6,
        "eval_pairs": 3,
        "max_new_tokens": 8,
        "alphas": [0.0, 4.0],
        "n_random": 1,
        "steer_pairs": 2,
    },
    "tiny": {},
    # the ground-truth organism (shipped base): VSFA / control / mirror / text, 3 LoRA seeds each
    "organism": {
        "model": "organism",
        "data": "organism",
        "organism_n": 512,
        "arms": ["vsfa", "control", "mirror", "text"],
        "seeds": [0, 1, 2],
        "steps": 150,
        "batch_size": 32,
        "lr": 1e-3,
        "scheduler": "constant",
        "lora_r": 8,
        "lora_alpha": 16,
        "log_until": 128,
        "contrast": "sets/organism_context.jsonl",
        "requests": "sets/organism_requests.jsonl",
        "openers": ["sets/openers_refuse.txt", "sets/openers_comply.txt"],
        "refusal_mode": "first_token",  # P(refuse) = p(refusal word) / (p(refusal word) + p(compliance word))
        "eval_pairs": None,
        "eval_variants": ["text"],
        "max_new_tokens": 8,
        "alphas": [0.0, 1.0, 2.0, 4.0],
        "n_random": 3,
        "steer_pairs": None,
        "batch": 40,
        "workers": 0,
    },
    # the real-language demo VLM (SmolLM2-135M-Instruct + trained vision tower), 3 seeds per arm
    "smol-llava": {
        "model": "smol-llava",
        "arms": ["vsfa", "control", "text"],
        "seeds": [0, 1, 2],
        "images": 40,
        "image_size": 64,
        "image_style": "icon",
        "questions_per_image": 2,
        "steps": 32,
        "lr": 1e-3,
        "lora_r": 8,
        "lora_alpha": 16,
        "log_until": 32,
        "log_base": 4.0,
        "persona_questions": 24,
        "track_pairs": 32,
        "eval_pairs": 8,
        "eval_variants": ["neutral", "typo"],
        "refusal_mode": "first_token",  # one forward pass for the refusal score instead of one per opener
        "max_new_tokens": 16,
        "alphas": [0.0, 2.0, 4.0, 8.0],
        "n_random": 2,
        "steer_pairs": 8,
        "batch": 16,
        "workers": 0,
    },
}

# smol-llava-safe (issue 19): the same study on the safety-tuned base (it refuses about half of held-out harmful
# text requests). Twice the smol-llava steps so the fine-tune can move behaviour; plain-text and typographic requests
# (the image path is the jailbreak) on 16 evaluation pairs; checkpoints 1, 4, 16, 64.
STUDIES["smol-llava-safe"] = {
    **STUDIES["smol-llava"],
    "model": "smol-llava-safe",
    "steps": 64,
    "log_until": 64,
    "eval_pairs": 16,
    "track_pairs": 16,
    "eval_variants": ["text", "typo"],
    "track_questions": 8,  # persona contrast at every checkpoint: 8 of the directions' 24 questions (96 of 288 items)
}

ALL_STUDIES = ("organism", "smol-llava-safe")  # `vsfa demo --study all`, in this order


def study_config(
    preset: str, config: str | Path | None = None, overrides: list[str] = (), out: str | Path | None = None
) -> StudyConfig:
    """A preset (:data:`STUDIES`), then a TOML file, then ``KEY=VALUE`` overrides (TOML values), then ``out``."""
    from vsfa.config import parse_assignments, read_toml, set_dotted

    if preset not in STUDIES:
        raise ConfigError(f"unknown study {preset!r}; choose from {', '.join(STUDIES)} (or all)")
    user: dict[str, Any] = read_toml(config) if config is not None else {}
    for key, value in parse_assignments(overrides).items():
        set_dotted(user, key, value)
    if out is not None:
        user["out"] = str(out)
    return study_configs(preset, user)[0]


def study_configs(preset: str, user: dict[str, Any]) -> list[StudyConfig]:
    """``vsfa demo --study NAME``: the preset (``all``: each of :data:`ALL_STUDIES`) with ``user``'s settings laid
    over it; with several presets a user ``out`` holds one sub-folder per preset."""
    from vsfa.config import from_dict

    presets = ALL_STUDIES if preset == "all" else (preset,)
    configs = []
    for name in presets:
        if name not in STUDIES:
            raise ConfigError(f"unknown study {name!r}; choose from {', '.join(STUDIES)} (or all)")
        values: dict[str, Any] = {"out": f"runs/demo-{name}", **STUDIES[name], **user}
        if len(presets) > 1 and "out" in user:
            values["out"] = str(Path(user["out"]) / name)
        cfg = from_dict(StudyConfig, values)
        cfg.check()
        configs.append(cfg)
    return configs


def run_name(arm: str, seed: int) -> str:
    return f"{arm}-s{seed}"


def _stage(name: str, t0: float) -> None:
    logger.info("[%6.0f s] %s", time.perf_counter() - t0, name)


def _model(cfg: StudyConfig, study: Path) -> Path:
    """The study's model folder (:func:`vsfa.models.sources.resolve_model`); a tiny model is built into
    ``STUDY/model``."""
    from vsfa.models.sources import resolve_model

    return resolve_model(cfg.model, build_into=study / "model")


def _in_study(spec: str, study: Path) -> str:
    """``sets/...`` settings name files inside the study folder; anything else is passed through."""
    return str(study / spec) if spec.startswith(f"{SETS}/") else spec


def _prepare_data(cfg: StudyConfig, model: Path, study: Path) -> dict[str, Path]:
    """Training data per arm (and, for the organism, its prompt sets under ``STUDY/sets``)."""
    from vsfa.data.build import build_variants

    data = study / "data"
    if cfg.data == "organism":
        from vsfa.organism.finetune import write_arm_data
        from vsfa.organism.pretrain import read_world
        from vsfa.organism.sets import export_sets

        world = read_world(model)
        if not (study / SETS / "manifest.json").is_file():
            export_sets(world, study / SETS)
        # the organism's exact refusal and compliance openers, for the judge-free refusal score
        write_text_atomic(study / SETS / "openers_refuse.txt", world.text.refusal + "\n")
        write_text_atomic(
            study / SETS / "openers_comply.txt", world.text.compliance.split("{")[0].strip() + "\n"
        )
        for arm in cfg.arms:
            if not is_complete(data / arm):
                write_arm_data(world, arm, cfg.organism_n, data / arm, seed=0)
        return {arm: data / arm for arm in cfg.arms}
    variants = sorted({ARM_VARIANTS[a] for a in cfg.arms})
    if not all(is_complete(data / v) for v in variants):
        build_variants(
            data,
            variants,
            procedural=cfg.images,
            procedural_size=cfg.image_size,
            questions_per_image=cfg.questions_per_image,
            procedural_style=cfg.image_style,
        )
    return {arm: data / ARM_VARIANTS[arm] for arm in cfg.arms}


def _lora_target(cfg: StudyConfig, model: Path) -> str:
    """LoRA target regex: for the organism, the adapter placement of its world's fine-tune recipe
    (``finetune.lora_layers`` / ``lora_modules``); otherwise the family's default ("")."""
    if cfg.data != "organism":
        return ""
    from vsfa.models.loading import load_vlm
    from vsfa.organism.finetune import lora_targets
    from vsfa.organism.pretrain import read_world

    ft = read_world(model).finetune
    if not ft.lora_layers and not ft.lora_modules:
        return ""
    return lora_targets(load_vlm(model), ft.lora_layers, ft.lora_modules)


def _train(
    cfg: StudyConfig,
    model: Path,
    data: Path,
    arm: str,
    seed: int,
    out: Path,
    target_regex: str = "",
    study: Path | None = None,
) -> None:
    """Train one run (skipped when complete) and record the study it belongs to."""
    from vsfa.train import config_from_dict, train

    if not is_complete(out):
        train_cfg = config_from_dict(
            {
                "out": str(out),
                "arm": arm,
                "seed": seed,
                "model": {"base": str(model)},
                "data": {"path": str(data)},
                "lora": {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "target_regex": target_regex},
                "train": {
                    "max_steps": cfg.steps,
                    "batch_size": cfg.batch_size,
                    "lr": cfg.lr,
                    "warmup": cfg.warmup,
                    "scheduler": cfg.scheduler,
                },
                "checkpoints": {"log_until": cfg.log_until, "log_base": cfg.log_base, "every": cfg.every},
                "runtime": {"device": cfg.device, "progress": False},
            }
        )
        train(train_cfg, quiet=True)
    if study is not None:
        _link_run(out, study)


def _link_run(run: Path, study: Path) -> None:
    """Record in the run's manifest the study it belongs to (``vsfa probe`` takes its defaults from there)."""
    from vsfa.io import read_manifest

    manifest = read_manifest(run)
    if manifest.get("study") != str(study):
        write_manifest(run, {**manifest, "study": str(study)})


def _directions_path(study: Path) -> Path:
    """The study's persona directions (``.json`` + ``.safetensors`` beside this stem)."""
    return study / "directions" / "persona"


def _openers(cfg: StudyConfig, study: Path) -> list[str | None]:
    return [_in_study(o, study) for o in cfg.openers] if cfg.openers else [None, None]


def _generation(cfg: StudyConfig, study: Path) -> GenerationConfig:
    """The evaluation's generation settings (greedy answers, the refusal score with the study's openers)."""
    from vsfa.eval.generation import GenerationConfig

    openers = _openers(cfg, study)
    return GenerationConfig(
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch,
        refusal_mode=cfg.refusal_mode,
        openers_refuse=openers[0],
        openers_comply=openers[1],
    )


def _select_on_base(cfg: StudyConfig, model: Path, study: Path, selection_set: str) -> dict[str, Any]:
    """Persona directions on the base (layer search on selection items), then the causal candidate selection
    (``STUDY/selection.json``); the chosen candidate is recorded in the direction artifact. Returns the
    selection."""
    from analysis.selection import SelectConfig, select
    from probes.directions import load_directions
    from probes.stages import DirectionsConfig, run_directions

    dpath = _directions_path(study)
    if not dpath.with_suffix(".json").is_file():
        run_directions(
            DirectionsConfig(
                model=str(model),
                out=str(dpath),
                acts=str(study / "acts"),
                contrast=_in_study(cfg.contrast, study),
                separation=selection_set,
                max_questions=cfg.persona_questions,
                batch_size=cfg.batch,
                device=cfg.device,
            ),
        )
    dset = load_directions(dpath)
    openers = _openers(cfg, study)
    selection = select(
        SelectConfig(
            model=str(model),
            directions=str(dpath),
            requests=selection_set,
            out=str(study / "selection.json"),
            methods=list(cfg.select_methods),
            exclude_last=cfg.exclude_last,
            orthogonalise=cfg.orthogonalise,
            max_kl=cfg.max_kl,
            min_accuracy=cfg.min_accuracy,
            max_items=cfg.select_items,
            first_trained_layer=_first_trained_layer(cfg, model, int(dset.meta["n_layers"])),
            openers_refuse=openers[0],
            openers_comply=openers[1],
            batch_size=cfg.batch,
            device=cfg.device,
        ),
    )
    chosen = selection["chosen"]
    keys = ("hook", "position", "method")
    if [(dset.selected or {}).get(k) for k in keys] != [chosen[k] for k in keys]:
        dset.with_selected(
            chosen["hook"], chosen["position"], chosen["method"], f"causal selection: {selection['note']}"
        ).save(dpath)
    return selection


def _measure(cfg: StudyConfig, run: Path, study: Path, evaluation_set: str, shared_base: Path | None) -> None:
    """Evaluate every checkpoint of ``run`` on the evaluation items (the base's answers copied from
    ``shared_base`` when given), then track it along the chosen direction."""
    from analysis.trajectory import TrackConfig, track
    from vsfa.eval.judges import make_judge
    from vsfa.eval.runner import BASE_NAME, BenchSpec, run_eval

    bench = BenchSpec(
        "builtin", evaluation_set, {"limit_pairs": cfg.eval_pairs, "variants": tuple(cfg.eval_variants)}
    )
    base_eval = run / "eval" / BASE_NAME
    if shared_base is not None and not base_eval.exists():
        shutil.copytree(shared_base, base_eval)
    run_eval(
        [bench], [make_judge("keyword")], _generation(cfg, study), run=run, device=cfg.device, quiet=True
    )
    attribution = _in_study(cfg.contrast, study) if cfg.data == "organism" else _image_set(evaluation_set)
    track(
        TrackConfig(
            run=str(run),
            directions=str(_directions_path(study)),
            sets=[evaluation_set],
            attribution_set=attribution,
            acts=str(study / "acts"),
            max_pairs=cfg.track_pairs,
            contrast_questions=cfg.track_questions,
            batch_size=cfg.batch,
            device=cfg.device,
        ),
    )


def _workers(cfg: StudyConfig, n_runs: int, choice: ThreadChoice) -> tuple[int, int]:
    """(worker processes, torch threads each) given this process's thread ``choice``: ``cfg.workers`` (0: one per
    free core, at most :data:`MAX_AUTO_WORKERS`), one on a GPU; each takes the user's thread setting, else its
    share of the free cores."""
    from vsfa.threads import free_cores

    if cfg.device != "cpu":
        return 1, choice.threads
    free = choice.threads if choice.source == "auto" else free_cores()  # auto: the free cores already
    workers = max(1, min(cfg.workers or min(free, MAX_AUTO_WORKERS), n_runs))
    threads = choice.threads if choice.source != "auto" else max(1, free // workers)
    return workers, threads


def _first_trained_layer(cfg: StudyConfig, model: Path, n_layers: int) -> int:
    """The lowest layer a LoRA adapter of this study trains: a residual direction below it cannot move."""
    if cfg.data != "organism":
        return 0
    from vsfa.organism.pretrain import read_world

    layers = read_world(model).finetune.lora_layers
    return min(layer % n_layers for layer in layers) if layers else 0


def _split_sets(cfg: StudyConfig, study: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    """Split the request set into selection / evaluation files under ``STUDY/splits``; record the contrast's own
    split too. Returns (the record for the study manifest, part -> requests file)."""
    from probes.contrasts import load_set
    from probes.splits import split_set, write_split

    split = split_set(_in_study(cfg.requests, study), cfg.split_key, cfg.split_seed, cfg.split_fraction)
    files = write_split(split, study / "splits")
    contrast = load_set(_in_study(cfg.contrast, study), max_questions=cfg.persona_questions)
    record = {
        "requests": {**split.as_dict(), "files": {p: str(f) for p, f in files.items()}},
        "contrast": {
            "set": contrast.name,
            "source": contrast.source,
            "key": "group",
            "made": "file",
            "selection": [it.id for it in contrast.items if it.split != "heldout"],
            "evaluation": [it.id for it in contrast.items if it.split == "heldout"],
            "use": "directions are derived on the selection (extract) items; held-out persona accuracy is "
            "cross-validated by persona pair and measured on the heldout items",
        },
    }
    return record, files


def run_study(cfg: StudyConfig) -> dict[str, Any]:
    """Run every stage of the study; returns the summary (also written to STUDY/summary.{md,json}).

    Protocol: the request set is split by pair into selection and evaluation items (``STUDY/splits``); the
    directions' layer search and the causal candidate selection (``STUDY/selection.json``) see only selection
    items; tracking, evaluation, link and steering see only evaluation items. ``STUDY/manifest.json`` (last)
    records the split and the chosen direction."""
    from analysis.causal import SteerConfig, steer
    from analysis.link import LinkConfig, link
    from analysis.selection import chosen_line
    from vsfa.eval.runner import BASE_NAME
    from vsfa.train import list_checkpoints

    cfg.check()
    # torch threads from the cores free now (VSFA_THREADS / OMP_NUM_THREADS override); workers share them
    choice = apply_threads()
    t0 = time.perf_counter()
    study = Path(cfg.out).resolve()  # recorded paths stay valid from any working folder
    study.mkdir(parents=True, exist_ok=True)
    (study / "manifest.json").unlink(missing_ok=True)  # complete again only when this run finishes
    write_text_atomic(study / "study.json", json.dumps(asdict(cfg), indent=2))
    _stage("model", t0)
    model = _model(cfg, study)

    _stage(f"data: {cfg.data} arms {', '.join(cfg.arms)}", t0)
    data = _prepare_data(cfg, model, study)
    splits, split_files = _split_sets(cfg, study)
    selection_set, evaluation_set = (str(split_files[p]) for p in ("selection", "evaluation"))
    n_sel, n_eval = (splits["requests"]["n"][p] for p in ("selection", "evaluation"))
    _stage(f"split {cfg.requests} by {cfg.split_key}: {n_sel} selection / {n_eval} evaluation items", t0)

    runs = {run_name(a, s): study / "runs" / run_name(a, s) for a in cfg.arms for s in cfg.seeds}
    target = _lora_target(cfg, model)
    select_label = "persona directions and causal candidate selection on the base model (selection items)"
    tasks = [Task("select", select_label, _select_on_base, (cfg, model, study, selection_set))]
    for arm in cfg.arms:
        for seed in cfg.seeds:
            name = run_name(arm, seed)
            tasks.append(
                Task(
                    f"train {name}",
                    f"train {name}: {cfg.steps} steps",
                    _train,
                    (cfg, model, data[arm], arm, seed, runs[name], target, study),
                )
            )
    # every run starts from the same base: the first run evaluates it, the rest copy its answers
    first = next(iter(runs))
    for name, run in runs.items():
        after = ("select", f"train {name}", *(() if name == first else (f"measure {first}",)))
        shared_base = None if name == first else runs[first] / "eval" / BASE_NAME
        label = f"evaluate and track {name}: every checkpoint on the evaluation items"
        tasks.append(
            Task(f"measure {name}", label, _measure, (cfg, run, study, evaluation_set, shared_base), after)
        )
    workers, threads = _workers(cfg, len(runs), choice)
    if workers > 1:
        logger.info("%d worker processes x %d torch threads", workers, threads)
    results = run_tasks(tasks, workers, threads, announce=lambda label: _stage(label, t0))
    selection = results["select"]
    chosen = selection["chosen"]
    if workers > 1:  # the worker's own log stays quiet
        logger.info("%s", chosen_line(selection))
    dpath = _directions_path(study)
    gen = _generation(cfg, study)

    _stage("link: shift vs safety (cluster CIs over runs), arms vs control, held-out-run search", t0)
    others = [str(r) for n, r in runs.items() if not n.startswith("control-")]
    controls = [str(r) for n, r in runs.items() if n.startswith("control-")]
    link(
        LinkConfig(
            runs=others,
            controls=controls,
            out=str(study / "link.json"),
            set=Path(evaluation_set).stem,
            hook=chosen["hook"],
            position=chosen["position"],
            method=chosen["method"],
            final_step=cfg.steps,
        ),
    )

    _stage("causal: steering on the base, ablation and undo on the final VSFA checkpoint", t0)
    final_vsfa = list_checkpoints(runs[run_name("vsfa", cfg.seeds[0])])[-1][1]
    steer(
        SteerConfig(
            model=str(model),
            directions=str(dpath),
            out=str(study / "steer"),
            checkpoint=str(final_vsfa),
            hook=chosen["hook"],
            position=chosen["position"],
            method=chosen["method"],
            alphas=list(cfg.alphas),
            n_random=cfg.n_random,
            bench_path=evaluation_set,
            generation={k: getattr(gen, k) for k in ("refusal_mode", "openers_refuse", "openers_comply")},
            bench_options={"limit_pairs": cfg.steer_pairs, "variants": ("text",)},
            max_new_tokens=cfg.max_new_tokens,
            batch_size=cfg.batch,
            device=cfg.device,
        ),
    )

    figures: list[str] = []
    if cfg.figures:
        _stage("figures", t0)
        from figures.make_all import make_all

        figures = [str(p) for p in make_all(study)]
    manifest = {
        "kind": "vsfa.study",
        "config": asdict(cfg),
        "splits": splits,
        "selection": {"file": "selection.json", "chosen": chosen, "fallback": selection["fallback"]},
        "directions": str(dpath.with_suffix(".json").relative_to(study)),
        "files": ["study.json", "selection.json", "link.json", "steer/causal.json", "summary.md"],
    }
    summary = summarise(study, manifest, figures, time.perf_counter() - t0)
    write_manifest(study, {**manifest, "seconds": round(time.perf_counter() - t0, 1)})
    _stage("done", t0)
    return summary


def _image_set(requests: str) -> str:
    """``requests`` with a neutral procedural image beside every request (for the image-token attribution)."""
    from probes.contrasts import IMAGE_VARIANT

    return requests + IMAGE_VARIANT


def summarise(study: Path, manifest: dict[str, Any], figures: list[str], seconds: float) -> dict[str, Any]:
    """``STUDY/summary.md`` (the results as :func:`analysis.report.render_study` renders them, the figures, the
    time) and ``summary.json``."""
    from analysis.report import render_study

    text = f"# VSFA study {study}\n\n" + render_study(study, manifest)
    if figures:
        text += "\nFigures:\n" + "".join(f"- {f}\n" for f in figures)
    text += f"\n({seconds:.0f} s)\n"
    write_text_atomic(study / "summary.md", text)
    summary = {"study": str(study), "text": text, "figures": figures, "link": str(study / "link.json")}
    write_json_atomic(study / "summary.json", summary)
    return summary
