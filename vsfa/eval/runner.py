"""``vsfa eval``: benchmarks x checkpoints -> responses, judged rows, metrics, one folder each.

Output layout (a folder is complete only when its ``manifest.json`` exists; it is written last)::

    <eval_dir>/<checkpoint>/<benchmark>/responses.jsonl   answers keyed by item id (resumable)
                                       judged.jsonl       one row per (item, judge), naming the judge
                                       metrics.json       per judge, with bootstrap 95% CIs
                                       manifest.json      model/adapter fingerprints, items key, config, judges
    <eval_dir>/table.csv                                  headline metrics across checkpoints

With ``--run RUN`` the checkpoints are ``RUN/checkpoints/step-NNNNNN/`` (peft adapter + manifest.json; step 0
is the base model) and ``eval_dir`` defaults to ``RUN/eval``. A rerun skips what is finished with the same
content key, resumes an interrupted generation, judges only the judges that are missing, and recomputes
whatever changed.

With ``--backend server`` nothing is loaded here: one OpenAI-compatible server (vLLM, SGLang, TGI) holds the
base model and each checkpoint as a named LoRA adapter; :func:`served_names` maps the base (step 0) to
``--gen-model`` and every other checkpoint to ``--adapter-name-template`` (default ``{run}-{step}``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vsfa import distributed as dist
from vsfa.errors import ArtifactError, ConfigError
from vsfa.eval.benchmarks import load_benchmark
from vsfa.eval.generation import (
    GenerationConfig,
    generate_responses,
    generate_responses_server,
    generation_key,
    items_key,
    server_key,
)
from vsfa.eval.items import BenchItem
from vsfa.eval.judges import Judge, judge_key
from vsfa.eval.metrics import compute_metrics, write_table
from vsfa.eval.modelio import HookContext
from vsfa.io import (
    is_complete,
    model_fingerprint,
    output_lock,
    read_jsonl,
    read_manifest,
    recorded_path,
    sha256_file,
    write_json_atomic,
    write_jsonl_atomic,
    write_manifest,
)
from vsfa.progress import progress

logger = logging.getLogger(__name__)
BASE_NAME = "step-000000"


@dataclass
class BenchSpec:
    """One benchmark to run: name, local path (None for ``builtin``), loader options."""

    name: str
    path: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> BenchSpec:
        """``NAME`` or ``NAME=PATH``."""
        name, sep, path = text.partition("=")
        if not name.strip():
            raise ConfigError(f"--bench {text!r}: expected NAME=PATH")
        return cls(name.strip(), path.strip() if sep else None)

    def load(self, limit: int | None = None, limit_mode: str = "stratified") -> list[BenchItem]:
        """The benchmark's items; ``limit``: N of them (N >= 1), see :func:`limit_items`."""
        check_limit(limit)
        check_limit_mode(limit_mode)
        items = load_benchmark(self.name, self.path, **self.options)
        return limit_items(items, limit, limit_mode)


LIMIT_MODES = ("stratified", "first")


def check_limit_mode(mode: str) -> None:
    """``mode`` is one of :data:`LIMIT_MODES`."""
    if mode not in LIMIT_MODES:
        raise ConfigError(f"limit mode must be one of {', '.join(LIMIT_MODES)}, not {mode!r}")


def limit_items(items: list[BenchItem], limit: int | None, mode: str = "stratified") -> list[BenchItem]:
    """``limit`` items of a benchmark, in benchmark order (all of them when ``limit`` is None).

    ``first``: the first N. ``stratified`` (default): round-robin over the (label, category) strata in order
    of first appearance, each taken in benchmark order (where a question's variants sit together), so a smoke
    run covers every label and scenario it can before the second item of any.
    """
    if limit is None or limit >= len(items):
        return list(items)
    if mode == "first":
        return list(items[:limit])
    strata: dict[tuple[str, str], list[int]] = {}
    for i, it in enumerate(items):
        strata.setdefault((it.label, it.category), []).append(i)
    picked: list[int] = []
    depth = 0
    while len(picked) < limit:
        for group in strata.values():
            if depth < len(group) and len(picked) < limit:
                picked.append(group[depth])
        depth += 1
    return [items[i] for i in sorted(picked)]


def check_limit(limit: int | None, where: str = "limit") -> None:
    """``limit`` is None (all items) or a positive integer; 0 or a negative count is a ConfigError."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"{where} must be a positive number of items (or unset for all), not {limit!r}")


@dataclass
class Checkpoint:
    """A model to evaluate: its name in the eval folder and the adapter folder (None: the base model)."""

    name: str
    adapter: Path | None = None


def run_checkpoints(run: str | Path, allow_incomplete: bool = False) -> tuple[list[Checkpoint], str | None]:
    """Complete checkpoints of a run (step 0 = base model first) and the base model recorded in them.

    A run without its final ``manifest.json`` (interrupted or still training) is an ArtifactError unless
    ``allow_incomplete``.
    """
    run = Path(run)
    folder = run / "checkpoints"
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: run has no checkpoints folder")
    if not is_complete(run) and not allow_incomplete:
        raise ArtifactError(
            f"{run}: training run is incomplete (no manifest.json: interrupted or still running); "
            "finish it with vsfa train, or pass --allow-incomplete to evaluate its finished checkpoints"
        )
    ckpts, base = [Checkpoint(BASE_NAME, None)], None
    for path in sorted(folder.glob("step-*")):
        if not path.is_dir():
            continue
        if not is_complete(path):
            logger.warning("%s has no manifest.json (incomplete); skipped", path)
            continue
        manifest = read_manifest(path)
        base = base or recorded_path(manifest.get("base_model"), path)
        if path.name == BASE_NAME or not (path / "adapter_config.json").is_file():
            if path.name != BASE_NAME:
                raise ArtifactError(
                    f"{path}: checkpoint without adapter_config.json (only step 0 may be the base)"
                )
            continue
        ckpts.append(Checkpoint(path.name, path))
    return ckpts, base


ADAPTER_NAME_FIELDS = ("run", "step", "checkpoint")


def check_adapter_name_template(template: str) -> None:
    """``template`` uses only the fields of :data:`ADAPTER_NAME_FIELDS` (ConfigError naming the option)."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise ConfigError(f"adapter_name_template {template!r}: {e}") from None
    for name in fields:
        if name not in ADAPTER_NAME_FIELDS:
            raise ConfigError(
                f"adapter_name_template {template!r}: unknown field {{{name}}}; "
                f"use {', '.join('{' + f + '}' for f in ADAPTER_NAME_FIELDS)}"
            )
    if not template.format(run="r", step=1, checkpoint="c").strip():
        raise ConfigError("adapter_name_template gives an empty name")


def _step_of(ck: Checkpoint) -> int:
    match = re.fullmatch(r"step-(\d+)", ck.name)
    if match:
        return int(match.group(1))
    step = read_manifest(ck.adapter).get("step") if ck.adapter and is_complete(ck.adapter) else None
    if isinstance(step, int) and not isinstance(step, bool):
        return step
    raise ConfigError(
        f"{ck.adapter}: no step (folder not named step-NNNNNN, no step in manifest.json) for adapter_name_template"
    )


def served_names(ckpts: Sequence[Checkpoint], base_name: str, template: str, run_name: str) -> dict[str, str]:
    """The served model name of each checkpoint: ``base_name`` for the base, ``template`` for an adapter.

    ``template`` fields: ``{run}`` (run folder name), ``{step}`` (checkpoint step as a plain integer),
    ``{checkpoint}`` (checkpoint folder name, e.g. ``step-000100``). Two checkpoints mapped to one name are a
    ConfigError (the server would answer both with the same adapter).
    """
    check_adapter_name_template(template)
    names: dict[str, str] = {}
    for ck in ckpts:
        if ck.adapter is None:
            names[ck.name] = base_name
        else:
            names[ck.name] = template.format(run=run_name, step=_step_of(ck), checkpoint=ck.name)
    seen: dict[str, str] = {}
    for ck_name, served in names.items():
        if served in seen:
            raise ConfigError(
                f"adapter_name_template {template!r}: checkpoints {seen[served]} and {ck_name} are both "
                f"served as {served!r} (use {{step}} or {{checkpoint}})"
            )
        seen[served] = ck_name
    return names


def _judged_for(rows: list[dict[str, Any]], judge: Judge, ids: set[str]) -> list[dict[str, Any]] | None:
    key = judge_key(judge)
    mine = [r for r in rows if r["judge"] == judge.name]
    if (
        mine
        and all(
            r["judge_version"] == key["judge_version"] and r["prompt_hash"] == key["prompt_hash"]
            for r in mine
        )
        and {r["id"] for r in mine} == ids
        and len(mine) == len(ids)
    ):
        return mine
    return None


def run_judges(
    responses: list[dict[str, Any]],
    judges: Sequence[Judge],
    previous: list[dict[str, Any]] | None = None,
    image_for: Callable[[str], Any] | None = None,
) -> list[dict[str, Any]]:
    """Judged rows for every judge (reusing ``previous`` rows of an identical judge); all-or-nothing per judge."""
    ids = {r["id"] for r in responses}
    previous = previous or []
    names = {j.name for j in judges}
    kept = [r for r in previous if r["judge"] not in names]  # other judges' rows stay, each names its judge
    kept = [r for r in kept if r["id"] in ids]
    out = []
    for judge in judges:
        reuse = _judged_for(previous, judge, ids)
        if reuse is not None:
            out += reuse
            continue
        if hasattr(judge, "templates"):
            decisions = judge.judge(responses, image_for=image_for)
        else:
            decisions = judge.judge(responses)
        key = judge_key(judge)
        for rec, d in zip(responses, decisions, strict=True):
            out.append(
                {
                    "id": rec["id"],
                    **key,
                    "refused": d.refused,
                    "unsafe": d.unsafe,
                    "score": d.score,
                    "raw": d.raw,
                    "detail": d.detail,
                }
            )
    return kept + out


def evaluate_items(
    items: list[BenchItem],
    bench_dir: str | Path,
    config: GenerationConfig,
    judges: Sequence[Judge],
    vlm=None,
    client=None,
    key: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    hook_context: HookContext = None,
    progress: Callable[[int, int], None] | None = None,
    concurrency: int = 8,
) -> dict[str, Any]:
    """Generate (or resume), judge and score one benchmark for one model; returns the metrics.

    ``client``: a server client naming the served model (instead of ``vlm``), with up to ``concurrency``
    requests in flight.
    """
    bench_dir = Path(bench_dir)
    gen_key = generation_key(items, config, key if client is None else server_key(client, key))
    previous: list[dict[str, Any]] = []
    if is_complete(bench_dir):
        old = read_manifest(bench_dir)
        if old.get("generation_key") == gen_key and (bench_dir / "judged.jsonl").is_file():
            previous = read_jsonl(bench_dir / "judged.jsonl")
    dist.barrier()  # every process has read the old manifest before the main retires it
    if dist.is_main():
        retire_results(bench_dir)
    if client is not None:
        responses = generate_responses_server(
            client, items, bench_dir / "responses.jsonl", config, key, progress, concurrency
        )
    else:
        if vlm is None:
            raise ConfigError("evaluate_items needs a loaded model (vlm) or a server client")
        responses = generate_responses(
            vlm, items, bench_dir / "responses.jsonl", config, hook_context, key, progress
        )
    if not dist.is_main():  # under a launcher the other processes only generated their share
        return {}
    by_id = {it.item_id: it for it in items}
    judged = run_judges(responses, judges, previous, image_for=lambda i: by_id[i].load_image())
    write_jsonl_atomic(bench_dir / "judged.jsonl", judged)
    metrics = compute_metrics(responses, judged, context)
    write_json_atomic(bench_dir / "metrics.json", metrics)
    write_manifest(
        bench_dir,
        {
            **(context or {}),
            **((key or {}) if client is None else {**server_key(client, key), "server": client.config.url}),
            "generation_key": gen_key,
            "items_key": items_key(items),
            "generation": asdict(config),
            "n_items": len(items),
            "judges": sorted({(r["judge"], r["judge_version"], r["prompt_hash"]) for r in judged}),
            "files": {
                n: sha256_file(bench_dir / n) for n in ("responses.jsonl", "judged.jsonl", "metrics.json")
            },
        },
    )
    return metrics


def retire_results(bench_dir: Path) -> None:
    """Mark a (checkpoint, benchmark) folder incomplete before it is recomputed.

    The manifest goes first (one atomic unlink: from then on no reader takes the folder as a result), then
    the metrics it vouched for, so an interrupted rerun can never leave old numbers that read as current.
    """
    (bench_dir / "manifest.json").unlink(missing_ok=True)
    (bench_dir / "metrics.json").unlink(missing_ok=True)


MODEL_FIELDS = ("model_fingerprint", "adapter_fingerprint")


def check_same_model(bench_dir: Path, key: dict[str, Any], overwrite: bool) -> None:
    """Refuse to replace complete results of another model (or adapter) unless ``overwrite``."""
    if overwrite or not is_complete(bench_dir):
        return
    old = read_manifest(bench_dir)
    for name in MODEL_FIELDS:
        if name in old and old[name] != key.get(name):
            was, now = (str(v)[:12] if v else "none" for v in (old[name], key.get(name)))
            raise ArtifactError(
                f"{bench_dir}: holds complete results of another model ({name} {was}, now {now}); "
                "pass --overwrite to replace them, or choose another --out"
            )


def _follow(bar) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback that moves ``bar`` (a :func:`vsfa.progress.progress` bar)."""

    def show(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return show


def run_eval(
    benches: Sequence[BenchSpec],
    judges: Sequence[Judge],
    config: GenerationConfig,
    model: str | Path | None = None,
    checkpoint: str | Path | None = None,
    run: str | Path | None = None,
    out: str | Path | None = None,
    limit: int | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    client=None,
    quiet: bool = False,
    overwrite: bool = False,
    allow_incomplete: bool = False,
    limit_mode: str = "stratified",
    concurrency: int = 8,
    adapter_name_template: str = "{run}-{step}",
) -> Path:
    """Evaluate the base model and/or checkpoints on every benchmark; returns the eval folder.

    With a server ``client`` the base is asked as ``client``'s model and each checkpoint as the adapter named
    by ``adapter_name_template`` (see :func:`served_names`), ``concurrency`` requests at a time.

    Every input is checked before any work; the eval folder is locked against a second writer; complete
    results of another model are refused unless ``overwrite``; a run without its final manifest is refused
    unless ``allow_incomplete`` (then recorded as ``run_complete: false`` in every manifest and metrics file).
    """
    from vsfa.models.loading import AdapterSwitcher
    from vsfa.models.sources import is_spec, resolve_model

    check_limit(limit)
    check_limit_mode(limit_mode)
    if model is not None and is_spec(model):
        model = resolve_model(model)  # fingerprints and manifests name the folder, not the spec
    config.validate()
    if checkpoint is not None and run is not None:
        raise ConfigError("give --checkpoint or --run, not both")
    if not judges:
        raise ConfigError("no judge given (e.g. --judge keyword)")
    run_complete = None
    if run is not None:
        ckpts, recorded_base = run_checkpoints(run, allow_incomplete)
        run_complete = is_complete(run)
        model = model or recorded_base
        eval_dir = Path(out) if out else Path(run) / "eval"
    elif checkpoint is not None:
        cpath = Path(checkpoint)
        if not cpath.is_dir():
            raise ArtifactError(f"{cpath}: checkpoint folder not found")
        if model is None and is_complete(cpath):
            model = recorded_path(read_manifest(cpath).get("base_model"), cpath)
        ckpts = [Checkpoint(cpath.name, cpath if (cpath / "adapter_config.json").is_file() else None)]
        if out is None and cpath.parent.name == "checkpoints":
            out = cpath.parent.parent / "eval"
        if out is None:
            raise ConfigError("--out is required when the checkpoint is not inside RUN/checkpoints/")
        eval_dir = Path(out)
    else:
        if out is None:
            raise ConfigError("--out is required with --model alone")
        ckpts, eval_dir = [Checkpoint("base", None)], Path(out)
    if model is None and client is None:
        raise ConfigError("no base model: pass --model (the checkpoint manifests do not name one)")
    names = [s.name for s in benches]
    if len(set(names)) != len(names):
        raise ConfigError(f"benchmark given twice: {sorted({n for n in names if names.count(n) > 1})[0]}")
    loaded = {spec.name: spec.load(limit, limit_mode) for spec in benches}
    base_fp = model_fingerprint(model) if model is not None and Path(model).is_dir() else None
    keys = {
        ck.name: {  # content identity only: the same model through another path is the same model
            "model_fingerprint": base_fp,
            "adapter_fingerprint": model_fingerprint(ck.adapter) if ck.adapter else None,
        }
        for ck in ckpts
    }
    for ck in ckpts:
        for spec in benches:
            check_same_model(eval_dir / ck.name / spec.name, keys[ck.name], overwrite)
    if client is not None and dist.world() > 1:
        raise ConfigError(
            "--backend server runs in one process (--concurrency sets the parallel requests); launch it without accelerate"
        )
    clients = {}
    if client is not None:
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, not {concurrency}")
        run_name = _run_name(run, checkpoint)
        served = served_names(ckpts, client.config.model, adapter_name_template, run_name)
        clients = {ck: client.with_model(name) for ck, name in served.items()}
    # the base is read once for all checkpoints; their adapters are swapped in (AdapterSwitcher)
    lock = output_lock(eval_dir) if dist.is_main() else contextlib.nullcontext()
    with lock, AdapterSwitcher(model, dtype=dtype, device=dist.local_device(device)) as models:
        for ck in ckpts:
            vlm = models.load(ck.adapter) if client is None else None
            for spec in benches:
                items = loaded[spec.name]
                context = {
                    "checkpoint": ck.name,
                    "benchmark": spec.name,
                    "bench_path": spec.path,
                    "bench_options": spec.options,
                    "limit": limit,
                    "limit_mode": limit_mode if limit is not None else None,
                    "model": str(Path(model).absolute()) if model and Path(model).exists() else model,
                    "adapter": str(ck.adapter.absolute()) if ck.adapter else None,
                }
                if run_complete is not None:
                    context["run_complete"] = run_complete
                logger.info("%s / %s: %d items", ck.name, spec.name, len(items))
                bar = progress(
                    None, f"{ck.name}/{spec.name}", len(items), quiet=quiet or not dist.is_main(), unit="item"
                )
                evaluate_items(
                    items,
                    eval_dir / ck.name / spec.name,
                    config,
                    judges,
                    vlm=vlm,
                    client=clients.get(ck.name),
                    key=keys[ck.name],
                    context=context,
                    progress=_follow(bar),
                    concurrency=concurrency,
                )
                bar.close()
        if dist.is_main():
            write_table(eval_dir)
    dist.barrier()  # under a launcher the others return once the main has written every result
    return eval_dir


def _run_name(run: str | Path | None, checkpoint: str | Path | None) -> str:
    """``{run}`` of the adapter name template: the run folder's name (``RUN`` of ``RUN/checkpoints/step-N``)."""
    if run is not None:
        return Path(run).resolve().name
    if checkpoint is not None:
        cpath = Path(checkpoint).resolve()
        return cpath.parent.parent.name if cpath.parent.name == "checkpoints" else cpath.parent.name
    return ""


def build_specs(benches: Sequence[str], options: dict[str, dict[str, Any]] | None = None) -> list[BenchSpec]:
    """``--bench NAME[=PATH]`` and ``--bench-opt NAME.KEY=VALUE`` (as ``{NAME: {KEY: VALUE}}``) -> specs."""
    specs = [BenchSpec.parse(b) for b in benches]
    by_name = {s.name: s for s in specs}
    for name, opts in (options or {}).items():
        if not isinstance(opts, dict) or not opts:
            raise ConfigError(f"--bench-opt {name!r}: expected NAME.KEY=VALUE")
        if name not in by_name:
            raise ConfigError(f"--bench-opt {name}: benchmark {name!r} is not among the --bench given")
        by_name[name].options.update(opts)
    return specs


JUDGE_KEY_ENV = "VSFA_JUDGE_API_KEY"  # read when set; keys are taken from the environment, never stored
GEN_KEY_ENV = "VSFA_GEN_API_KEY"


@dataclass
class EvalConfig:
    """Settings of ``vsfa eval``."""

    bench: list[str] = field(default_factory=list)
    """NAME or NAME=PATH (repeatable); `vsfa eval benchmarks` lists names."""
    bench_opt: dict[str, Any] = field(default_factory=dict)
    """Loader option NAME.KEY=VALUE, e.g. mmsafety.variants=SD,TYPO."""
    model: Path | None = None
    """Base model folder (default: base_model of the run's checkpoints)."""
    checkpoint: Path | None = None
    """One checkpoint folder (peft adapter + manifest.json)."""
    run: Path | None = None
    """Run folder: evaluate step 0 (base) and every checkpoint."""
    judge: list[str] = field(default_factory=lambda: ["keyword"])
    """keyword[:gcg|refusal_direction|xstest|vlguard] | llm | cs | guard:PATH."""
    judge_url: str | None = None
    """OpenAI-compatible base URL for llm/cs judges."""
    judge_model: str | None = None
    """Model name on the judge endpoint."""
    judge_templates: Path | None = None
    """Folder overriding the judge templates."""
    judge_key_env: str | None = None
    """Env variable holding the judge endpoint's API key (default VSFA_JUDGE_API_KEY, if set)."""
    out: Path | None = None
    """Eval folder (default RUN/eval)."""
    batch_size: int = 8
    """Generation batch size."""
    max_new_tokens: int = 256
    """Answer length limit."""
    limit: int | None = None
    """N items of each benchmark (smoke runs), spread over labels and categories."""
    limit_mode: str = "stratified"
    """--limit: stratified | first (first N)."""
    system: str | None = None
    """System prompt."""
    defense: str = "none"
    """none | adashield_s"""
    defense_placement: str = "suffix"
    """suffix | prefix (AdaShield-S wording)."""
    refusal_score: bool = True
    """Store the refusal log-odds with each answer."""
    refusal_mode: str = "sequence"
    """sequence (whole openers) | first_token (cheaper)."""
    openers_refuse: Path | None = None
    """Refusal opener list (default: shipped)."""
    openers_comply: Path | None = None
    """Compliance opener list (default: shipped)."""
    backend: str = "local"
    """local (HF generate) | server (OpenAI-compatible: vLLM, SGLang, TGI; docs/evaluation.md)."""
    gen_url: str | None = None
    """Server backend base URL."""
    gen_model: str | None = None
    """Server backend: served name of the base model (checkpoints: --adapter-name-template)."""
    gen_key_env: str | None = None
    """Env variable holding the server backend's API key (default VSFA_GEN_API_KEY, if set)."""
    adapter_name_template: str = "{run}-{step}"
    """Server backend: served LoRA adapter name of each checkpoint ({run}, {step}, {checkpoint}); the base is --gen-model."""
    concurrency: int = 8
    """Server backend: requests in flight at once."""
    max_retries: int = 3
    """Server backend: retries of a request after a connection error, HTTP 429 or 5xx (exponential backoff)."""
    retry_backoff: float = 1.0
    """Server backend: seconds before the first retry (doubled for each further one)."""
    device: str = "cpu"
    """torch device (cpu, cuda, cuda:1, ...) | auto: spread over the GPUs (accelerate device_map)."""
    dtype: str | None = None
    """float32 | bfloat16 | float16 | int8 | nf4 (bitsandbytes weights, CUDA) (default: the device's)."""
    overwrite: bool = False
    """Replace complete results of another model in --out."""
    allow_incomplete: bool = False
    """With --run: evaluate a run without its final manifest (recorded as run_complete false)."""


def run_eval_config(cfg: EvalConfig) -> Path:
    """Generate answers, judge them and write metrics with 95% CIs per (checkpoint, benchmark)."""
    import logging

    from vsfa.eval.endpoint import ChatClient, EndpointConfig
    from vsfa.eval.judges import make_judge

    if not cfg.bench:
        raise ConfigError("eval: give at least one --bench (`vsfa eval benchmarks` lists them)")
    endpoint = None
    if cfg.judge_url or cfg.judge_model:
        if not (cfg.judge_url and cfg.judge_model):
            raise ConfigError("give both --judge-url and --judge-model")
        key_env = cfg.judge_key_env or JUDGE_KEY_ENV
        endpoint = EndpointConfig(
            cfg.judge_url, cfg.judge_model, api_key_env=key_env, require_key=bool(cfg.judge_key_env)
        )
    judges = [
        make_judge(j, endpoint=endpoint, templates=cfg.judge_templates, device=cfg.device)
        for j in cfg.judge or ["keyword"]
    ]
    client = None
    if cfg.backend == "server":
        if not (cfg.gen_url and cfg.gen_model):
            raise ConfigError("--backend server needs --gen-url and --gen-model")
        if cfg.concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, not {cfg.concurrency}")
        if cfg.max_retries < 0:
            raise ConfigError(f"max_retries must be 0 or more, not {cfg.max_retries}")
        if cfg.retry_backoff < 0:
            raise ConfigError(f"retry_backoff must be 0 or more seconds, not {cfg.retry_backoff}")
        check_adapter_name_template(cfg.adapter_name_template)
        key_env = cfg.gen_key_env or GEN_KEY_ENV
        client = ChatClient(
            EndpointConfig(
                cfg.gen_url,
                cfg.gen_model,
                api_key_env=key_env,
                require_key=bool(cfg.gen_key_env),
                retries=cfg.max_retries + 1,
                backoff=cfg.retry_backoff,
            )
        )
    elif cfg.backend != "local":
        raise ConfigError(f"unknown backend {cfg.backend!r}; choose local or server")
    generation = GenerationConfig(
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        system_prompt=cfg.system,
        defense=cfg.defense,
        defense_placement=cfg.defense_placement,
        refusal_score=cfg.refusal_score and client is None,
        refusal_mode=cfg.refusal_mode,
        openers_refuse=str(cfg.openers_refuse) if cfg.openers_refuse else None,
        openers_comply=str(cfg.openers_comply) if cfg.openers_comply else None,
    )
    return run_eval(
        build_specs(cfg.bench, cfg.bench_opt),
        judges,
        generation,
        model=cfg.model,
        checkpoint=cfg.checkpoint,
        run=cfg.run,
        out=cfg.out,
        limit=cfg.limit,
        device=cfg.device,
        dtype=cfg.dtype,
        client=client,
        quiet=not logging.getLogger("vsfa").isEnabledFor(logging.INFO),
        overwrite=cfg.overwrite,
        allow_incomplete=cfg.allow_incomplete,
        limit_mode=cfg.limit_mode,
        concurrency=cfg.concurrency,
        adapter_name_template=cfg.adapter_name_template,
    )
