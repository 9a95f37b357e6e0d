"""MVTec AD and VisA in their published layouts: categories, test samples with masks, seeded K-shot references.

MVTec AD layout (also VisA converted to it, and the synthetic sets of `model.training.data.synth`)::

    <root>/<category>/train/good/*.png
    <root>/<category>/test/<defect type>/*.png           (good = normal)
    <root>/<category>/ground_truth/<defect type>/<n>_mask.png   (or <n>.png; none for good)

VisA layout: `<root>/split_csv/1cls.csv` with columns object,split,label,image,mask; paths relative to
`<root>`; label is `normal` or `anomaly`.

Images are loaded lazily, by path. Masks come back as bool arrays (anything non-zero is anomalous).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
GOOD = "good"
VISA_CSV = Path("split_csv") / "1cls.csv"
VISA_COLUMNS = ("object", "split", "label", "image", "mask")

Size = int | tuple[int, int]  # an int is a square side; a tuple is (H, W)


class DatasetError(ValueError):
    """A dataset path or layout is not what the loader expects; the message says what was expected."""


@dataclass(frozen=True)
class TestSample:
    """One test image: label 1 = anomalous, 0 = normal. `mask_path` is None for normal images."""

    __test__ = False  # not a pytest test class despite the name

    image_path: Path
    mask_path: Path | None
    label: int
    defect_type: str
    category: str

    def load_image(self) -> Image.Image:
        """The test image decoded as RGB."""
        return load_image(self.image_path)

    def load_mask(self, size: Size | None = None) -> np.ndarray:
        """(H, W) bool mask at `size` (nearest), or at the image's own size when `size` is None."""
        if self.mask_path is None:
            return np.zeros(_hw(size) if size is not None else image_hw(self.image_path), dtype=bool)
        return load_mask(self.mask_path, size)


def load_image(path: Path | str) -> Image.Image:
    """The image at `path`, decoded, as RGB (MVTec has greyscale categories; the models want RGB)."""
    with Image.open(path) as image:
        return image.convert("RGB")


def image_hw(path: Path | str) -> tuple[int, int]:
    """(H, W) of an image file, read from its header without decoding the pixels."""
    with Image.open(path) as image:
        return image.height, image.width


def load_mask(path: Path | str, size: Size | None = None) -> np.ndarray:
    """(H, W) bool mask from a mask image (non-zero = anomalous), resized with nearest when `size` given."""
    with Image.open(path) as mask:
        mask = mask.convert("L")
        if size is not None:
            height, width = _hw(size)
            mask = mask.resize((width, height), Image.Resampling.NEAREST)
        return np.asarray(mask) > 0


def _hw(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class AnomalyDataset:
    """Common interface: `categories`, `train_images(cat)`, `test_samples(cat)`, `sample_references(...)`."""

    name: str = "dataset"

    def __init__(self, root: Path | str, categories: tuple[str, ...]) -> None:
        self.root = Path(root)
        self.categories = categories

    def train_images(self, category: str) -> list[Path]:
        """Paths of the normal training images of `category` (implemented by each layout)."""
        raise NotImplementedError

    def test_samples(self, category: str) -> list[TestSample]:
        """Every test sample of `category` (implemented by each layout)."""
        raise NotImplementedError

    def sample_references(self, category: str, k: int, seed: int) -> list[Path]:
        """K distinct normal training images of `category`, drawn with `seed`; the same seed, the same draw."""
        images = self.train_images(category)
        if not 1 <= k <= len(images):
            raise ValueError(f"k must be between 1 and {len(images)} for {self.name} '{category}', got {k}")
        chosen = np.random.default_rng(seed).choice(len(images), size=k, replace=False)
        return [images[i] for i in chosen]

    def _check_category(self, category: str) -> None:
        if category not in self.categories:
            raise DatasetError(
                f"unknown category '{category}' in {self.name} at {self.root}; available: {', '.join(self.categories)}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, categories={list(self.categories)})"


def _select(available: list[str], wanted: list[str] | tuple[str, ...] | None, where: str) -> tuple[str, ...]:
    if not wanted:
        return tuple(available)
    missing = [c for c in wanted if c not in available]
    if missing:
        raise DatasetError(f"categories not found in {where}: {', '.join(missing)}; available: {', '.join(available)}")
    return tuple(wanted)


def _require_dir(path: Path) -> Path:
    if not path.is_dir():
        raise DatasetError(f"dataset root {path} does not exist or is not a folder")
    return path


class MVTecAD(AnomalyDataset):
    """MVTec AD layout (see module docstring). `categories` None = every folder with a train/good."""

    name = "mvtec"

    def __init__(self, root: Path | str, categories: list[str] | tuple[str, ...] | None = None) -> None:
        root = _require_dir(Path(root).expanduser())
        available = sorted(p.name for p in root.iterdir() if (p / "train" / GOOD).is_dir())
        if not available:
            raise DatasetError(
                f"no MVTec-layout category under {root}: expected <root>/<category>/train/good with images"
            )
        super().__init__(root, _select(available, categories, f"MVTec layout at {root}"))

    def train_images(self, category: str) -> list[Path]:
        """The images in <root>/<category>/train/good, sorted; raises
        DatasetError for an unknown category or an empty folder."""
        self._check_category(category)
        folder = self.root / category / "train" / GOOD
        images = list_images(folder)
        if not images:
            raise DatasetError(f"no images in {folder}: expected <root>/<category>/train/good with images")
        return images

    def test_samples(self, category: str) -> list[TestSample]:
        """Every test image, defect types in name order (good included), images in name order."""
        self._check_category(category)
        test_dir = self.root / category / "test"
        types = sorted(p.name for p in test_dir.iterdir() if p.is_dir()) if test_dir.is_dir() else []
        if not types:
            raise DatasetError(f"no test images for '{category}': expected {test_dir}/<defect type>/*.png")
        return [
            self._sample(image, defect_type, category)
            for defect_type in types
            for image in list_images(test_dir / defect_type)
        ]

    def _sample(self, image: Path, defect_type: str, category: str) -> TestSample:
        if defect_type == GOOD:
            return TestSample(image, None, 0, GOOD, category)
        mask_dir = self.root / category / "ground_truth" / defect_type
        candidates = [mask_dir / f"{image.stem}_mask.png", mask_dir / f"{image.stem}.png"]
        mask = next((c for c in candidates if c.is_file()), None)
        if mask is None:
            raise DatasetError(f"missing mask for {image}: expected {candidates[0]} (or {candidates[1].name})")
        return TestSample(image, mask, 1, defect_type, category)


class VisA(AnomalyDataset):
    """VisA from its split csv (`<root>/split_csv/1cls.csv`), or VisA already converted to the MVTec layout."""

    name = "visa"

    def __init__(self, root: Path | str, categories: list[str] | tuple[str, ...] | None = None) -> None:
        root = _require_dir(Path(root).expanduser())
        csv_path = root / VISA_CSV
        self._mvtec: MVTecAD | None = None
        self._rows: list[dict[str, str]] = []
        if csv_path.is_file():
            self._rows = _read_visa_csv(csv_path)
            available = sorted({row["object"] for row in self._rows})
            super().__init__(root, _select(available, categories, str(csv_path)))
            return
        try:
            self._mvtec = MVTecAD(root, categories)
        except DatasetError as error:
            if "categories not found" in str(error):
                raise
            raise DatasetError(
                f"no VisA dataset at {root}: expected the split csv {csv_path} "
                "(columns object,split,label,image,mask) or the MVTec layout <root>/<category>/train/good"
            ) from error
        super().__init__(root, self._mvtec.categories)

    def train_images(self, category: str) -> list[Path]:
        """The normal images of the csv's train split (or of train/good in the MVTec layout), sorted; raises
        DatasetError for an unknown category or none found."""
        self._check_category(category)
        if self._mvtec is not None:
            return self._mvtec.train_images(category)
        normal = [self._path(r["image"]) for r in self._split_rows(category, "train") if r["label"] == "normal"]
        if not normal:
            raise DatasetError(f"no normal training images for '{category}' in {self.root / VISA_CSV}")
        return sorted(normal)

    def test_samples(self, category: str) -> list[TestSample]:
        """Every test image; defect type is `good` for normal and `anomaly` for anomalous (VisA has no types)."""
        self._check_category(category)
        if self._mvtec is not None:
            return self._mvtec.test_samples(category)
        rows = self._split_rows(category, "test")
        if not rows:
            raise DatasetError(f"no test rows for '{category}' in {self.root / VISA_CSV}")
        samples = [self._sample(row) for row in rows]
        return sorted(samples, key=lambda s: (s.defect_type != GOOD, str(s.image_path)))

    def _split_rows(self, category: str, split: str) -> list[dict[str, str]]:
        return [r for r in self._rows if r["object"] == category and r["split"] == split]

    def _sample(self, row: dict[str, str]) -> TestSample:
        image = self._path(row["image"])
        if row["label"] == "normal":
            return TestSample(image, None, 0, GOOD, row["object"])
        if not row["mask"]:
            raise DatasetError(f"anomalous image {row['image']} has no mask in {self.root / VISA_CSV}")
        return TestSample(image, self._path(row["mask"]), 1, "anomaly", row["object"])

    def _path(self, relative: str) -> Path:
        path = self.root / relative
        if not path.is_file():
            raise DatasetError(f"{self.root / VISA_CSV} names {relative}, but {path} does not exist")
        return path


def _read_visa_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        if reader.fieldnames is None or any(c not in reader.fieldnames for c in VISA_COLUMNS):
            raise DatasetError(f"{path} must have the columns {','.join(VISA_COLUMNS)}; got {reader.fieldnames}")
        rows = [{key: (row[key] or "").strip() for key in VISA_COLUMNS} for row in reader]
    bad = sorted({r["label"] for r in rows} - {"normal", "anomaly"})
    if bad:
        raise DatasetError(f"{path}: label must be 'normal' or 'anomaly', found {bad}")
    return rows


DATASET_KINDS: dict[str, type[AnomalyDataset]] = {"mvtec": MVTecAD, "visa": VisA}


def open_dataset(spec: str, categories: list[str] | tuple[str, ...] | None = None) -> AnomalyDataset:
    """A dataset from a CLI spec `KIND:PATH`, KIND one of mvtec, visa (e.g. `mvtec:/data/mvtec_ad`)."""
    kind, sep, path = spec.partition(":")
    if not sep or not path or kind not in DATASET_KINDS:
        raise DatasetError(
            f"bad dataset spec {spec!r}: expected KIND:PATH with KIND one of {', '.join(DATASET_KINDS)}, "
            "e.g. mvtec:/data/mvtec_ad"
        )
    return DATASET_KINDS[kind](path, categories)
