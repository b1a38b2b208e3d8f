"""MM-SafetyBench (isXinLiu/MM-SafetyBench): query-relevant images (SD, typography, both) of a key phrase.

Layout::

    processed_questions/01-Illegal_Activitiy.json ... 13-Gov_Decision.json   (or data/processed_questions/)
    imgs/<scenario>/{SD,SD_TYPO,TYPO}/<id>.jpg                               (image root; may live elsewhere)

Each scenario file is an object keyed "0", "1", ... whose values carry ``Question``, ``GPT-Pred``,
``Changed Question``, ``Key Phrase``, ``Phrase Type``, ``Rephrased Question`` and ``Rephrased Question(SD)``.
Each variant is sent with its own text field (several third-party loaders get this wrong)::

    SD      -> "Rephrased Question(SD)"
    SD_TYPO -> "Rephrased Question"
    TYPO    -> "Rephrased Question"
    text    -> "Question"   (text-only baseline, no image)

Scenarios 08 and 10-13 are judged with special templates (there "safe" means the model declined), so their
attack rates are reported apart from 01-07 and 09.

``scenarios`` picks scenarios by number (``01``), file name (``01-Illegal_Activitiy``) or name in either the
official or the natural spelling (``Illegal_Activity``, ``illegal activity``); an unknown name is an error
listing the scenarios found. ``tiny=true`` keeps the official tiny subset (``TinyVersion_ID_List.json`` at the
root or in ``data/``: a list of ``{"Scenario", "Sampled_ID_List"}``).
"""

from __future__ import annotations

import re
from pathlib import Path

from vsfa.errors import DataError
from vsfa.eval.benchmarks._schema import first_existing, read_json, require_dir, require_keys, require_str
from vsfa.eval.items import BenchItem, check_image_file

VARIANT_FIELD = {
    "SD": "Rephrased Question(SD)",
    "SD_TYPO": "Rephrased Question",
    "TYPO": "Rephrased Question",
    "text": "Question",
}
IMAGE_VARIANTS = ("SD", "SD_TYPO", "TYPO")
SCENARIOS = (
    "01-Illegal_Activitiy",
    "02-HateSpeech",
    "03-Malware_Generation",
    "04-Physical_Harm",
    "05-EconomicHarm",
    "06-Fraud",
    "07-Sex",
    "08-Political_Lobbying",
    "09-Privacy_Violence",
    "10-Legal_Opinion",
    "11-Financial_Advice",
    "12-Health_Consultation",
    "13-Gov_Decision",
)
SPECIAL_SCENARIOS = ("08", "10", "11", "12", "13")
_SCENARIO_RE = re.compile(r"^(\d\d)-\S+$")
_IMG_ROOT_NAMES = ("imgs", "data/imgs", "MM-SafetyBench(imgs)", "data/MM-SafetyBench(imgs)")


def scenario_number(scenario: str) -> str:
    """``"08-Political_Lobbying"`` -> ``"08"``."""
    m = _SCENARIO_RE.match(scenario)
    if not m:
        raise DataError(f"MM-SafetyBench scenario {scenario!r} is not named NN-Name")
    return m.group(1)


def is_special(scenario: str) -> bool:
    """True for the scenarios judged with special templates (08, 10-13)."""
    return scenario_number(scenario) in SPECIAL_SCENARIOS


def _norm(name: str) -> str:
    """Scenario name for matching: lower case, letters and digits only, official misspellings fixed."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    return key.replace("activitiy", "activity")


def _pick_scenarios(files: list[Path], wanted: tuple[str, ...], qdir: Path) -> list[Path]:
    by_key: dict[str, Path] = {}
    for p in files:
        number, _, name = p.stem.partition("-")
        for key in (p.stem, number, str(int(number)), _norm(p.stem), _norm(name)):
            by_key.setdefault(key, p)
    chosen: list[Path] = []
    for w in wanted:
        hit = by_key.get(w) or by_key.get(_norm(w))
        if hit is None:
            found = ", ".join(p.stem for p in files) or "none"
            raise DataError(f"{qdir}: no MM-SafetyBench scenario {w!r} (found: {found})")
        if hit not in chosen:
            chosen.append(hit)
    return sorted(chosen)


def _tiny_ids(root: Path) -> dict[str, set[str]]:
    """The official tiny subset: scenario -> question ids (``TinyVersion_ID_List.json``)."""
    path = first_existing(
        [root / "TinyVersion_ID_List.json", root / "data" / "TinyVersion_ID_List.json"],
        "MM-SafetyBench tiny list",
    )
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of {{Scenario, Sampled_ID_List}} objects")
    out: dict[str, set[str]] = {}
    for i, rec in enumerate(data):
        where = f"{path} [{i}]"
        rec = require_keys(rec, ("Scenario", "Sampled_ID_List"), where)
        ids = rec["Sampled_ID_List"]
        if not isinstance(ids, list):
            raise DataError(f"{where}: Sampled_ID_List must be a list")
        out[_norm(str(rec["Scenario"]))] = {str(x) for x in ids}
    return out


def _questions_dir(root: Path) -> Path:
    for cand in (root / "processed_questions", root / "data" / "processed_questions"):
        if cand.is_dir():
            return cand
    if root.is_dir() and any(_SCENARIO_RE.match(p.stem) for p in root.glob("*.json")):
        return root
    raise DataError(f"{root / 'processed_questions'}: MM-SafetyBench question folder not found")


def _image_root(root: Path, image_root: str | Path | None) -> Path:
    if image_root is not None:
        return require_dir(Path(image_root), "MM-SafetyBench image root")
    for name in _IMG_ROOT_NAMES:
        if (root / name).is_dir():
            return root / name
    looked = ", ".join(str(root / n) for n in _IMG_ROOT_NAMES)
    raise DataError(
        f"{root}: MM-SafetyBench image root not found (looked in {looked}); pass "
        "--bench-opt mmsafety.image_root=DIR (variants=text needs no images)"
    )


def load_mmsafety(
    root: str | Path,
    variants: tuple[str, ...] = IMAGE_VARIANTS,
    image_root: str | Path | None = None,
    scenarios: tuple[str, ...] | None = None,
    tiny: bool = False,
) -> list[BenchItem]:
    """Load MM-SafetyBench items for the given variants (``SD``, ``SD_TYPO``, ``TYPO``, ``text``)."""
    root = Path(root)
    bad = [v for v in variants if v not in VARIANT_FIELD]
    if bad:
        raise DataError(f"unknown MM-SafetyBench variant {bad[0]!r}; choose from {', '.join(VARIANT_FIELD)}")
    qdir = _questions_dir(require_dir(root, "MM-SafetyBench folder"))
    files = sorted(p for p in qdir.glob("*.json") if _SCENARIO_RE.match(p.stem))
    if not files:
        raise DataError(f"{qdir}: no scenario files named NN-Name.json")
    if scenarios:
        files = _pick_scenarios(files, tuple(scenarios), qdir)
    keep = _tiny_ids(root) if tiny else None
    img_root = _image_root(root, image_root) if any(v in IMAGE_VARIANTS for v in variants) else None
    items: list[BenchItem] = []
    for path in files:
        scenario = path.stem
        data = read_json(path)
        if not isinstance(data, dict):
            raise DataError(f"{path}: expected an object keyed by question id")
        special = is_special(scenario)
        qids = sorted(data, key=lambda k: (len(k), k))
        if keep is not None:
            qids = [q for q in qids if q in keep.get(_norm(scenario), set())]
        for qid in qids:
            where = f"{path} [{qid}]"
            rec = require_keys(data[qid], ("Question",), where)
            question = require_str(rec, "Question", where)
            for variant in variants:
                field = VARIANT_FIELD[variant]
                text = require_str(rec, field, where)
                image = None
                if variant in IMAGE_VARIANTS:
                    image = check_image_file(img_root / scenario / variant / f"{qid}.jpg", where)
                extra = {
                    "scenario": scenario,
                    "special": special,
                    "question_id": qid,
                    "question": question,
                    "text_field": field,
                    "key_phrase": rec.get("Key Phrase"),
                }
                items.append(
                    BenchItem(
                        "mmsafety",
                        f"{variant}/{scenario}/{qid}",
                        text,
                        "harmful",
                        scenario,
                        variant,
                        image=image,
                        extra=extra,
                    )
                )
    return items
