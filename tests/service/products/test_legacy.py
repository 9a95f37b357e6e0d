"""The folder store's reader against tests/fixtures/folder-store-v1 (written through the API by the folder store:
see tests/fixtures/make_folder_store.py for what it holds): each product's values, damaged copies that give
problems instead of exceptions, debris skipped, and nothing in the folder changed by reading it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from model import ReferenceSet
from service.products.legacy import has_folder_store, read_folder_store

FIXTURE = Path(__file__).parents[2] / "fixtures" / "folder-store-v1"


def products(data_dir: Path) -> dict:
    return {p.product_id: p for p in read_folder_store(data_dir)}


def stored(*parts: str) -> dict:
    return json.loads((FIXTURE / "products").joinpath(*parts).read_text())


@pytest.fixture
def copy(tmp_path) -> Path:
    """A copy of the fixture's data dir to damage."""
    shutil.copytree(FIXTURE, tmp_path / "data")
    return tmp_path / "data"


def test_every_product_of_the_fixture_is_read_whole():
    found = products(FIXTURE)
    assert list(found) == ["bottle", "caps", "screws"]
    assert all(p.importable and p.problems == [] for p in found.values())


def test_bottle_has_its_version_overrides_rules_recalibration_and_labels():
    bottle = products(FIXTURE)["bottle"]
    assert (bottle.version, bottle.generation) == (2, 7)
    assert bottle.uid == stored("bottle", "v2", "product.json")["uid"]
    assert (bottle.threshold_override, bottle.pixel_threshold_override) == (0.9, 0.95)
    assert bottle.references == FIXTURE / "products" / "bottle" / "v2"
    assert ReferenceSet.load(bottle.references).n_references == 2
    assert bottle.created_at == stored("bottle", "v2", "product.json")["created_at"]
    assert bottle.calibration.threshold == stored("bottle", "v2", "product.json")["calibration"]["threshold"]
    assert (bottle.rules.max_regions, bottle.rules.min_area_px, bottle.rules_version) == (1, 4, 2)
    assert bottle.recalibration.threshold == stored("bottle", "calibration.json")["calibration"]["threshold"]
    assert [(f.label, f.source, f.version) for f in bottle.frames] == [
        ("good", "calibration", 2),
        ("good", "calibration", 2),
        ("defect", "feedback", 2),
        ("good", "feedback", 2),
    ]
    index = stored("bottle", "frames", "index.json")["frames"]
    assert [(f.frame_id, f.score, f.pixel_hash) for f in bottle.frames] == [
        (e["frame_id"], e["score"], e["pixel_hash"]) for e in index
    ]
    assert all(f.image.read_bytes().startswith(b"\x89PNG") for f in bottle.frames)


def test_a_stale_recalibration_and_removed_rules_are_none_and_a_bare_product_has_defaults():
    found = products(FIXTURE)
    caps, screws = found["caps"], found["screws"]
    assert caps.version == 2 and caps.recalibration is None  # calibration.json belongs to v1
    assert (caps.rules, caps.rules_version) == (None, 2)
    assert [(f.label, f.source) for f in caps.frames] == [("good", "calibration")]
    assert (screws.version, screws.generation, screws.rules, screws.rules_version) == (1, 1, None, 0)
    assert (screws.threshold_override, screws.recalibration, screws.frames) == (None, None, [])


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)} {stat.st_mtime_ns} {stat.st_mode}".encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_reading_changes_nothing_in_the_data_dir(copy):
    before = tree_digest(copy)
    assert len(products(copy)) == 3 and has_folder_store(copy)
    assert tree_digest(copy) == before


def test_debris_is_skipped(copy):
    root = copy / "products"
    shutil.copytree(root / "screws", root / ".tmp-screws-0123")  # an upload in progress
    shutil.copytree(root / "caps", root / ".trash-caps-4567")  # a delete in progress
    (root / "orphan" / "v1").mkdir(parents=True)  # a first upload that never got its pointer
    (root / "bottle" / ".lock").write_text("host 1\n")
    shutil.copytree(root / "bottle" / "v2", root / "bottle" / ".tmp-bottle-89ab")
    found = products(copy)
    assert list(found) == ["bottle", "caps", "screws"]
    assert found["bottle"].problems == [] and found["bottle"].references == root / "bottle" / "v2"


def remove(path: Path) -> None:
    path.unlink()


def garble(path: Path) -> None:
    path.write_text('{"version": 2, "uid": ')


DAMAGES = [
    # (what is damaged, how, the problem's start, still importable)
    ("bottle/v2/bank.npy", remove, "bottle/v2: the reference files bank.npy are missing", False),
    ("bottle/v2/product.json", remove, "bottle/v2/product.json: FileNotFoundError", False),
    ("caps/current.json", garble, "caps/current.json: JSONDecodeError", False),
    ("bottle/rules.json", garble, "bottle/rules.json: JSONDecodeError", True),
    ("caps/calibration.json", garble, "caps/calibration.json: JSONDecodeError", True),
    ("bottle/frames/index.json", garble, "bottle/frames/index.json: JSONDecodeError", True),
]


@pytest.mark.parametrize(("target", "damage", "problem", "importable"), DAMAGES, ids=[d[0] for d in DAMAGES])
def test_a_damaged_file_is_a_problem_of_its_product_only(copy, target, damage, problem, importable):
    damage(copy / "products" / target)
    found = products(copy)
    damaged = found[target.split("/")[0]]
    assert len(damaged.problems) == 1 and damaged.problems[0].startswith(problem), damaged.problems
    assert damaged.importable is importable
    assert all(p.importable and p.problems == [] for p in found.values() if p is not damaged)


def test_a_bad_part_costs_only_that_part(copy):
    garble(copy / "products" / "bottle" / "rules.json")
    garble(copy / "products" / "bottle" / "frames" / "index.json")
    bottle = products(copy)["bottle"]
    assert (bottle.rules, bottle.frames, len(bottle.problems)) == (None, [], 2)
    assert (bottle.version, bottle.threshold_override, bottle.recalibration is not None) == (2, 0.9, True)


def test_a_frame_without_image_or_with_a_bad_entry_is_left_out(copy):
    folder = copy / "products" / "bottle" / "frames"
    index = json.loads((folder / "index.json").read_text())
    (folder / f"{index['frames'][0]['frame_id']}.img").unlink()
    index["frames"][1]["label"] = "maybe"
    (folder / "index.json").write_text(json.dumps(index))
    bottle = products(copy)["bottle"]
    assert [f.frame_id for f in bottle.frames] == [e["frame_id"] for e in index["frames"][2:]]
    assert len(bottle.problems) == 2 and bottle.importable


def test_a_pointer_written_before_uids_names_its_version(copy):
    pointer = copy / "products" / "screws" / "current.json"
    pointer.write_text(json.dumps({"version": 1}))
    screws = products(copy)["screws"]
    assert (screws.uid, screws.generation, screws.threshold_override, screws.importable) == ("v1", 0, None, True)


def test_no_folder_store_reads_as_nothing(tmp_path):
    assert list(read_folder_store(tmp_path)) == [] and not has_folder_store(tmp_path)
    (tmp_path / "products" / ".tmp-a-1").mkdir(parents=True)
    assert list(read_folder_store(tmp_path)) == [] and not has_folder_store(tmp_path)
