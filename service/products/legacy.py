"""A read-only reader of the folder product store (the layout before the records database held the registry), for
the import on first start. Nothing here writes, locks or removes.

    <data dir>/products/<id>/current.json   {"version": N, "uid": str, "generation": G,
                                             "threshold": null|float, "pixel_threshold": null|float}
    <data dir>/products/<id>/v<N>/          ReferenceSet files + product.json {"product_id", "uid", "created_at",
                                             "calibration"}
    <data dir>/products/<id>/rules.json     {"rules": null|{...}, "rules_version": M}
    <data dir>/products/<id>/calibration.json  {"uid", "calibration"}: thresholds recomputed from labelled frames,
                                             for the version with that uid only
    <data dir>/products/<id>/frames/index.json  {"frames": [{frame_id, label, source, time, filename,
                                             inspection_id, score, map_max, version, pixel_hash}, ...]}
    <data dir>/products/<id>/frames/<frame_id>.img  the labelled frame as uploaded

Debris is skipped: `.tmp-*` and `.trash-*` entries (a write or a delete in progress or crashed), lock files, and
folders without a pointer (a first upload that never finished). A file that cannot be read becomes a line in the
product's `problems` instead of an exception; `importable` says whether what is left is a whole product.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from service.decisions.rules import AcceptanceRules, sets_something
from service.decisions.thresholds import Calibration
from service.imaging.formats import PRODUCT_ID

PRODUCTS_DIR = "products"
POINTER = "current.json"
PRODUCT_META = "product.json"
RULES_FILE = "rules.json"
CALIBRATION_FILE = "calibration.json"
FRAMES_DIR = "frames"
FRAMES_INDEX = "index.json"
REFERENCE_FILES = ("meta.json", "features.safetensors", "bank.npy")  # what ReferenceSet.save writes
LABELS = ("good", "defect")
SOURCES = ("calibration", "feedback")
READ_ERRORS = (OSError, ValueError, TypeError, KeyError, ValidationError)  # ValueError: bad JSON or UTF-8


@dataclass(frozen=True)
class LegacyFrame:
    """One labelled frame: its index entry and the path of its image (the file as uploaded). `score` and `map_max`
    are against reference version `version` (None: not scored yet)."""

    frame_id: str
    label: str  # "good" | "defect"
    source: str  # "calibration" | "feedback"
    time: str  # ISO 8601
    filename: str | None
    inspection_id: str | None
    score: float | None
    map_max: float | None
    version: int | None
    pixel_hash: str | None
    image: Path


@dataclass
class LegacyProduct:
    """One product as the folder store held it. `references` is the current version's folder (ReferenceSet.load
    reads it); `calibration` and `created_at` come from its product.json; `recalibration` is calibration.json's
    calibration when it belongs to this version (its thresholds are then the calibrated ones in force). The
    overrides are the manual thresholds (None: the calibrated one applies). Fields the files could not give stay
    None; `problems` says why, one line per file ("<id>/<file>: <error>")."""

    product_id: str
    folder: Path
    version: int | None = None
    uid: str | None = None
    generation: int = 0
    threshold_override: float | None = None
    pixel_threshold_override: float | None = None
    references: Path | None = None
    calibration: Calibration | None = None
    created_at: str | None = None
    rules: AcceptanceRules | None = None
    rules_version: int = 0
    recalibration: Calibration | None = None
    frames: list[LegacyFrame] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def importable(self) -> bool:
        """Whether the product can be imported: pointer, references and calibration were read (a bad rules file,
        calibration.json or frame costs only that part)."""
        return None not in (self.version, self.uid, self.references, self.calibration, self.created_at)

    def problem(self, path: Path, err: BaseException | str) -> None:
        """Record that `path` (inside the product folder) could not be read."""
        reason = err if isinstance(err, str) else f"{type(err).__name__}: {err}"
        self.problems.append(f"{self.product_id}/{path.relative_to(self.folder)}: {reason}")


def has_folder_store(data_dir: Path) -> bool:
    """Whether `data_dir` holds a folder store with at least one product (a folder with a pointer); OSError when
    the products folder is there but cannot be listed."""
    return any(True for _ in product_folders(Path(data_dir) / PRODUCTS_DIR))


def read_folder_store(data_dir: Path) -> Iterator[LegacyProduct]:
    """Every product of the folder store in `data_dir`/products, sorted by id (nothing when that folder is absent).
    Raises OSError only when the products folder itself cannot be listed."""
    for folder in product_folders(Path(data_dir) / PRODUCTS_DIR):
        yield read_product(folder)


def product_folders(root: Path) -> list[Path]:
    """The product folders in `root` (valid id, a pointer file), sorted; debris left out."""
    if not root.is_dir():
        return []
    return sorted(
        entry
        for entry in root.iterdir()
        if PRODUCT_ID.fullmatch(entry.name) and entry.is_dir() and (entry / POINTER).is_file()
    )


def read_product(folder: Path) -> LegacyProduct:
    """One product folder (see the module docstring); never raises for its files."""
    product = LegacyProduct(folder.name, folder)
    try:
        pointer = json_file(folder / POINTER)
        product.version = int(pointer["version"])
        product.uid = str(pointer.get("uid") or f"v{product.version}")  # pointers written before uids existed
        product.generation = int(pointer.get("generation", 0))
        product.threshold_override = optional_float(pointer.get("threshold"))
        product.pixel_threshold_override = optional_float(pointer.get("pixel_threshold"))
    except READ_ERRORS as err:
        product.problem(folder / POINTER, err)
    else:
        read_version(product, folder / f"v{product.version}")
    read_rules(product)
    read_recalibration(product)
    product.frames = read_frames(product)
    return product


def read_version(product: LegacyProduct, version_dir: Path) -> None:
    """The version folder's references (checked complete, not loaded) and product.json."""
    missing = [name for name in REFERENCE_FILES if not (version_dir / name).is_file()]
    if missing:
        product.problem(version_dir, f"the reference files {', '.join(missing)} are missing")
    else:
        product.references = version_dir
    try:
        meta = json_file(version_dir / PRODUCT_META)
        product.calibration = Calibration.from_dict(meta["calibration"])
        product.created_at = str(meta["created_at"])
    except READ_ERRORS as err:
        product.problem(version_dir / PRODUCT_META, err)


def read_rules(product: LegacyProduct) -> None:
    """rules.json: rules that set nothing count as none (as the store read them)."""
    path = product.folder / RULES_FILE
    if not path.exists():
        return
    try:
        content = json_file(path)
        product.rules_version = int(content.get("rules_version", 0))
        rules = content.get("rules")
        if rules is not None and sets_something(rules):
            product.rules = AcceptanceRules.model_validate(rules)
    except READ_ERRORS as err:
        product.problem(path, err)


def read_recalibration(product: LegacyProduct) -> None:
    """calibration.json's calibration when its uid is the current version's."""
    path = product.folder / CALIBRATION_FILE
    if not path.exists() or product.uid is None:
        return
    try:
        content = json_file(path)
        if content.get("uid") == product.uid:
            product.recalibration = Calibration.from_dict(content["calibration"])
    except READ_ERRORS as err:
        product.problem(path, err)


def read_frames(product: LegacyProduct) -> list[LegacyFrame]:
    """The labelled frames, oldest first; an entry that cannot be read or whose image is missing is left out."""
    folder = product.folder / FRAMES_DIR
    index = folder / FRAMES_INDEX
    if not index.exists():
        return []
    try:
        entries = json_file(index)["frames"]
        if not isinstance(entries, list):
            raise TypeError(f"'frames' is a {type(entries).__name__}, not a list")
    except READ_ERRORS as err:
        product.problem(index, err)
        return []
    frames = []
    for n, entry in enumerate(entries):
        try:
            frame = labelled_frame(entry, folder)
        except READ_ERRORS as err:
            product.problem(index, f"frame {n}: {type(err).__name__}: {err}")
            continue
        if frame.image.is_file():
            frames.append(frame)
        else:
            product.problem(frame.image, f"the image of frame {frame.frame_id} is missing")
    return frames


def labelled_frame(entry: dict[str, Any], folder: Path) -> LegacyFrame:
    """One index entry; KeyError/TypeError/ValueError when it lacks a required field or has a wrong type."""
    frame_id = str(entry["frame_id"])
    if not frame_id.isalnum():
        raise ValueError(f"invalid frame id {frame_id!r}")
    if entry["label"] not in LABELS or entry["source"] not in SOURCES:
        raise ValueError(f"label {entry['label']!r} or source {entry['source']!r} unknown")
    version = entry.get("version")
    return LegacyFrame(
        frame_id=frame_id,
        label=entry["label"],
        source=entry["source"],
        time=str(entry["time"]),
        filename=entry.get("filename"),
        inspection_id=entry.get("inspection_id"),
        score=optional_float(entry.get("score")),
        map_max=optional_float(entry.get("map_max")),
        version=None if version is None else int(version),
        pixel_hash=entry.get("pixel_hash"),
        image=folder / f"{frame_id}.img",
    )


def json_file(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; OSError, ValueError (bad JSON or UTF-8) or TypeError (not an object)."""
    content = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(content, dict):
        raise TypeError(f"expected a JSON object, found {type(content).__name__}")
    return content


def optional_float(value: Any) -> float | None:
    """None stays None; anything else becomes a float (TypeError/ValueError otherwise)."""
    return None if value is None else float(value)
