"""One resolver for model sources: every place that takes a model accepts the same specs.

A source is one of:

- a model folder (``config.json`` + weights + processor files): used as it is;
- ``tiny:<family>``: a tiny random-weight VLM of a registry family (:mod:`vsfa.models.tiny`), built once into a
  folder (default ``<cache>/models/tiny-<family>``, ``<cache>`` = ``$VSFA_CACHE`` or ``~/.cache/vsfa``) and
  reused;
- ``organism``: the organism base shipped with the toolkit (``vsfa/resources/organism``);
- ``smol-llava`` / ``smol-llava-<variant>``: the real-language demo VLM (:func:`vsfa.models.smol_llava.build_demo`),
  assembled once into the cache.

An existing model folder always wins over a spec of the same name (``organism/`` built by ``vsfa organism build``
in the working folder is that folder, not the shipped base). Whatever is recorded about a model (fingerprints,
manifests) is recorded about the resolved folder, never about the spec.
"""

from __future__ import annotations

import json
from pathlib import Path

from vsfa.errors import ArtifactError, ConfigError, ModelLoadError

TINY_PREFIX = "tiny:"
ORGANISM = "organism"
SMOL_LLAVA = "smol-llava"
DEFAULT_VARIANT = "base"
SPECS = f"{TINY_PREFIX}<family>, {ORGANISM}, {SMOL_LLAVA}[-<variant>] or a model folder"


def _is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file()


def is_spec(source: str | Path) -> bool:
    """Whether ``source`` names a built-in model source rather than a folder (an existing folder wins)."""
    text = str(source)
    if _is_model_folder(Path(text).expanduser()):
        return False
    return text.startswith(TINY_PREFIX) or text in (ORGANISM, SMOL_LLAVA) or text.startswith(f"{SMOL_LLAVA}-")


def smol_llava_variants() -> tuple[str, ...]:
    """Names of the demo model's variants (``base`` first); ``smol-llava-<variant>`` builds one."""
    from vsfa.models import smol_llava

    return tuple(smol_llava.VARIANTS)


def _tiny(family: str, build_into: Path | None) -> Path:
    from vsfa.io import vsfa_cache_dir
    from vsfa.models.tiny import TINY_FAMILIES, save_tiny

    if family not in TINY_FAMILIES:
        raise ConfigError(
            f"model {TINY_PREFIX}{family}: no tiny builder for family {family!r}; "
            f"choose one of: {', '.join(TINY_FAMILIES)}"
        )
    folder = Path(build_into) if build_into is not None else vsfa_cache_dir() / "models" / f"tiny-{family}"
    marker = folder / "vsfa_tiny.json"
    if _is_model_folder(folder):
        built = json.loads(marker.read_text()).get("family") if marker.is_file() else None
        if built != family:
            raise ConfigError(
                f"{folder}: holds another model ({built or 'not a tiny model'}), not {TINY_PREFIX}{family}; "
                "delete it or choose another folder"
            )
        return folder
    return save_tiny(family, folder)


def _shipped_organism() -> Path:
    # the folder vsfa.organism.shipped describes; read here directly so that vsfa.models does not import upward
    from vsfa.resources import RESOURCES

    folder = RESOURCES / ORGANISM
    if not (folder / "manifest.json").is_file():
        raise ArtifactError(f"{folder}: no shipped organism base (manifest.json missing)")
    return folder


def _smol_llava(spec: str) -> Path:
    from vsfa.models.smol_llava import build_demo

    variant = spec[len(SMOL_LLAVA) + 1 :] if spec != SMOL_LLAVA else DEFAULT_VARIANT
    known = smol_llava_variants()
    if variant not in known:
        raise ConfigError(
            f"model {spec}: unknown {SMOL_LLAVA} variant {variant!r}; choose one of: {', '.join(known)}"
        )
    kwargs = {} if variant == DEFAULT_VARIANT else {"variant": variant}
    return build_demo(**kwargs)


def resolve_model(
    source: str | Path,
    *,
    build_into: str | Path | None = None,
) -> Path:
    """The model folder ``source`` names (see the module docstring), building it first where needed.

    ``build_into``: folder a ``tiny:<family>`` model is built into (default: the user cache). A spec that names
    nothing is a
    :class:`~vsfa.errors.ConfigError`, a missing folder or one without ``config.json`` a
    :class:`~vsfa.errors.ModelLoadError`; both name the source and the accepted forms.
    """
    text = str(source).strip()
    if not text:
        raise ConfigError(f"model source is empty; give {SPECS}")
    if is_spec(text):
        if text.startswith(TINY_PREFIX):
            return _tiny(text[len(TINY_PREFIX) :], Path(build_into) if build_into is not None else None)
        if text == ORGANISM:
            return _shipped_organism()
        return _smol_llava(text)
    folder = Path(text).expanduser()
    if not _is_model_folder(folder):
        what = "no config.json in the folder" if folder.is_dir() else "model folder not found"
        raise ModelLoadError(f"{text}: {what} (give {SPECS})")
    return folder
