"""Synthetic anomalies (cut-paste, Perlin-noise texture blends) and procedural "textured parts" datasets.

Every anomaly function takes an (H, W, 3) uint8 image (or a PIL image) and a seeded `np.random.Generator`
and returns `(image, mask)`: the new (H, W, 3) uint8 image and an (H, W) bool mask that is exactly the set
of pixels whose value changed. A draw that would change the image too little to see (mean absolute change
inside the region below `min_contrast` grey levels, or a tiny region) is redrawn.

`write_synthetic_dataset` renders normal parts of a few procedural categories, adds both kinds of
anomalies to some of them, and writes the lot in the MVTec AD layout (`MVTecAD` reads it back).
These images are for exercising training and evaluation code, not for measuring accuracy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

ImageLike = np.ndarray | Image.Image
MAX_TRIES = 50


class SynthesisError(RuntimeError):
    """No visible anomaly could be drawn in `MAX_TRIES` attempts (e.g. a flat image pasted onto itself)."""


def as_rgb_array(image: ImageLike) -> np.ndarray:
    """(H, W, 3) uint8 from a PIL image, an (H, W) or (H, W, 3) uint8 array."""
    array = np.asarray(image.convert("RGB")) if isinstance(image, Image.Image) else np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {array.shape}")
    return array


# --- cut-paste ---------------------------------------------------------------------------------------


def cut_paste(
    image: ImageLike,
    rng: np.random.Generator,
    source: ImageLike | None = None,
    *,
    area: tuple[float, float] = (0.02, 0.15),
    aspect: tuple[float, float] = (0.3, 3.3),
    scale: tuple[float, float] = (0.8, 1.25),
    max_rotation: float = 45.0,
    jitter: float = 0.2,
    min_contrast: float = 8.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a rectangle from `source` (default: `image` itself), paste it elsewhere on `image`.

    The patch covers `area` (fraction of the source, uniform) with an aspect ratio log-uniform in `aspect`,
    is resized by a factor in `scale`, colour-jittered by up to +-`jitter` per channel, rotated by up to
    +-`max_rotation` degrees (0 = no rotation), and pasted at a uniform position fully inside the image.
    """
    target = as_rgb_array(image)
    donor = target if source is None else as_rgb_array(source)
    for _ in range(MAX_TRIES):
        patch, alpha = _draw_patch(donor, rng, area, aspect, scale, max_rotation, jitter)  # (h, w, 3), (h, w)
        patch, alpha = _fit_inside(patch, alpha, target.shape[:2])
        top = int(rng.integers(0, target.shape[0] - alpha.shape[0] + 1))
        left = int(rng.integers(0, target.shape[1] - alpha.shape[1] + 1))
        result = target.copy()
        window = result[top : top + alpha.shape[0], left : left + alpha.shape[1]]  # (h, w, 3) view
        window[alpha] = patch[alpha]
        region = np.zeros(target.shape[:2], dtype=bool)
        region[top : top + alpha.shape[0], left : left + alpha.shape[1]] = alpha
        if _visible(target, result, region, min_contrast):
            return result, _changed(target, result)
    raise SynthesisError(f"no visible cut-paste anomaly in {MAX_TRIES} draws; is the image flat?")


def _draw_patch(
    donor: np.ndarray,
    rng: np.random.Generator,
    area: tuple[float, float],
    aspect: tuple[float, float],
    scale: tuple[float, float],
    max_rotation: float,
    jitter: float,
) -> tuple[np.ndarray, np.ndarray]:
    """A jittered, resized, rotated patch (h, w, 3) uint8 and its mask (h, w) bool of fully covered pixels."""
    height, width = donor.shape[:2]
    patch_area = rng.uniform(*area) * height * width
    ratio = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
    ph = int(np.clip(round(math.sqrt(patch_area / ratio)), 2, height))
    pw = int(np.clip(round(math.sqrt(patch_area * ratio)), 2, width))
    top, left = int(rng.integers(0, height - ph + 1)), int(rng.integers(0, width - pw + 1))
    patch = donor[top : top + ph, left : left + pw].astype(np.float32)  # (ph, pw, 3)
    patch = patch * rng.uniform(1 - jitter, 1 + jitter, size=3) + rng.uniform(-jitter, jitter) * 64
    pil = Image.fromarray(np.clip(patch, 0, 255).astype(np.uint8))
    factor = rng.uniform(*scale)
    pil = pil.resize((max(2, round(pw * factor)), max(2, round(ph * factor))), Image.Resampling.BILINEAR)
    opaque = Image.new("L", pil.size, 255)
    if max_rotation > 0:
        angle = rng.uniform(-max_rotation, max_rotation)
        pil = pil.rotate(angle, Image.Resampling.BILINEAR, expand=True)
        opaque = opaque.rotate(angle, Image.Resampling.BILINEAR, expand=True)
    return np.asarray(pil), np.asarray(opaque) == 255  # edge pixels mixed with the fill are left out


def _fit_inside(patch: np.ndarray, alpha: np.ndarray, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Shrink (nearest) a patch that is larger than the target image."""
    ph, pw = alpha.shape
    factor = min(1.0, hw[0] / ph, hw[1] / pw)
    if factor == 1.0:
        return patch, alpha
    size = (max(1, int(pw * factor)), max(1, int(ph * factor)))
    small = Image.fromarray(patch).resize(size, Image.Resampling.NEAREST)
    small_alpha = Image.fromarray(alpha).resize(size, Image.Resampling.NEAREST)
    return np.asarray(small), np.asarray(small_alpha)


# --- Perlin-noise texture blends ---------------------------------------------------------------------


def perlin_noise(shape: tuple[int, int], periods: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D gradient (Perlin) noise, (H, W) float32 in about [-1, 1], with `periods` lattice cells per axis."""
    ys = np.linspace(0, periods[0], shape[0], endpoint=False)  # (H,)
    xs = np.linspace(0, periods[1], shape[1], endpoint=False)  # (W,)
    yi, xi = ys.astype(int), xs.astype(int)
    yf, xf = (ys - yi)[:, None], (xs - xi)[None, :]  # (H, 1), (1, W)
    angles = rng.uniform(0, 2 * np.pi, size=(periods[0] + 1, periods[1] + 1))
    gradients = np.stack([np.sin(angles), np.cos(angles)], axis=-1)  # (Py+1, Px+1, 2) as (dy, dx)

    def corner(dy: int, dx: int) -> np.ndarray:
        g = gradients[yi[:, None] + dy, xi[None, :] + dx]  # (H, W, 2)
        return g[..., 0] * (yf - dy) + g[..., 1] * (xf - dx)  # (H, W)

    def fade(t: np.ndarray) -> np.ndarray:
        return t * t * t * (t * (t * 6 - 15) + 10)

    u, v = fade(yf), fade(xf)
    top = corner(0, 0) * (1 - v) + corner(0, 1) * v
    bottom = corner(1, 0) * (1 - v) + corner(1, 1) * v
    return (math.sqrt(2) * (top * (1 - u) + bottom * u)).astype(np.float32)


def perlin_mask(
    shape: tuple[int, int],
    rng: np.random.Generator,
    threshold: float = 0.5,
    max_scale_exponent: int = 6,
    area: tuple[float, float] = (0.005, 0.3),
) -> np.ndarray:
    """(H, W) bool blobs: Perlin noise above `threshold`, redrawn until the covered fraction lies in `area`.

    Periods per axis are 2**k, k < `max_scale_exponent`, and lattice cells stay at least 8 pixels wide.
    """
    exponents = min(max_scale_exponent, int(math.log2(max(min(shape) // 8, 1))) + 1)
    for _ in range(MAX_TRIES):
        periods = (2 ** int(rng.integers(0, exponents)), 2 ** int(rng.integers(0, exponents)))
        mask = perlin_noise(shape, periods, rng) > threshold
        if area[0] <= mask.mean() <= area[1]:
            return mask
    raise SynthesisError(f"no Perlin mask covering {area} of a {shape} image in {MAX_TRIES} draws")


def random_texture(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A foreign (H, W, 3) uint8 texture: coloured multi-octave Perlin noise, optionally striped."""
    octaves = sum(perlin_noise(shape, (2**o, 2**o), rng) / 2**o for o in range(1, 5))  # (H, W)
    if rng.random() < 0.5:
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 16)
        octaves = octaves + np.sin((yy * np.sin(angle) + xx * np.cos(angle)) * 2 * np.pi / period)
    span = np.ptp(octaves) or 1.0
    normalised = (octaves - octaves.min()) / span  # (H, W) in [0, 1]
    low, high = rng.uniform(0, 255, size=3), rng.uniform(0, 255, size=3)
    texture = low + normalised[..., None] * (high - low)  # (H, W, 3)
    return texture.astype(np.uint8)


def perlin_blend(
    image: ImageLike,
    rng: np.random.Generator,
    texture: ImageLike | None = None,
    *,
    opacity: tuple[float, float] = (0.0, 0.8),
    min_contrast: float = 8.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Blend a foreign texture into a Perlin-noise blob mask (DRAEM style).

    Inside the blob the pixel becomes `beta * image + (1 - beta) * texture`, with `beta` (how much of the
    original shows through) uniform in `opacity`. `texture` (resized to the image) defaults to
    `random_texture`.
    """
    target = as_rgb_array(image)
    shape = target.shape[:2]
    for _ in range(MAX_TRIES):
        foreign = random_texture(shape, rng) if texture is None else _resized(as_rgb_array(texture), shape)
        region = perlin_mask(shape, rng)
        beta = rng.uniform(*opacity)
        blended = beta * target + (1 - beta) * foreign.astype(np.float32)  # (H, W, 3)
        result = target.copy()
        result[region] = np.clip(np.rint(blended[region]), 0, 255).astype(np.uint8)
        if _visible(target, result, region, min_contrast):
            return result, _changed(target, result)
    raise SynthesisError(f"no visible texture blend in {MAX_TRIES} draws; is the texture the image itself?")


def _resized(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if image.shape[:2] == shape:
        return image
    return np.asarray(Image.fromarray(image).resize((shape[1], shape[0]), Image.Resampling.BILINEAR))


def _visible(before: np.ndarray, after: np.ndarray, region: np.ndarray, min_contrast: float) -> bool:
    if region.sum() < 4:
        return False
    change = np.abs(after[region].astype(np.int16) - before[region].astype(np.int16))  # (n, 3)
    return float(change.mean()) >= min_contrast


def _changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return (before != after).any(axis=2)  # (H, W)


ANOMALIES: dict[str, Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]] = {
    "cut_paste": cut_paste,
    "texture_blend": perlin_blend,
}


# --- procedural textured parts -------------------------------------------------------------------------


def _coordinates(size: int, rng: np.random.Generator, max_angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """(S, S) row and column coordinates in [0, 1), rotated by a small random angle about the centre."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size  # (S, S) each
    angle = np.deg2rad(rng.uniform(-max_angle_deg, max_angle_deg))
    cy, cx = yy - 0.5, xx - 0.5
    return cy * np.cos(angle) + cx * np.sin(angle) + 0.5, cx * np.cos(angle) - cy * np.sin(angle) + 0.5


def _finish(grey: np.ndarray, tint: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """(S, S) intensity in [0, 1] -> (S, S, 3) uint8 with a colour tint, brightness jitter and sensor noise."""
    brightness = rng.uniform(0.93, 1.07)
    rgb = grey[..., None] * np.asarray(tint, dtype=np.float32) * 255 * brightness  # (S, S, 3)
    rgb += rng.normal(0, 2.5, size=rgb.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def render_round_part(size: int, rng: np.random.Generator) -> np.ndarray:
    """A shaded metal washer (ring with a hole) on a dark background, position and radius jittered."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cy, cx = 0.5 + rng.uniform(-0.03, 0.03, size=2)
    radius = np.hypot(yy - cy, xx - cx)  # (S, S)
    outer, inner = rng.uniform(0.3, 0.34), rng.uniform(0.1, 0.12)
    ring = (radius < outer) & (radius > inner)
    light = 0.55 + 0.35 * np.cos((radius - inner) / (outer - inner) * np.pi) ** 2  # concentric sheen
    grey = np.where(ring, light, 0.12 + 0.04 * (yy + xx))
    return _finish(grey, (0.95, 0.95, 1.0), rng)


def render_woven(size: int, rng: np.random.Generator) -> np.ndarray:
    """Plain-weave fabric: threads alternately over and under, thread pitch and phase jittered."""
    yy, xx = _coordinates(size, rng, max_angle_deg=2.0)
    pitch = rng.uniform(1 / 13, 1 / 11)
    ty, tx = yy / pitch + rng.uniform(0, 1), xx / pitch + rng.uniform(0, 1)
    warp = np.sin(np.pi * (tx % 1.0)) ** 0.6  # (S, S) rounded vertical threads
    weft = np.sin(np.pi * (ty % 1.0)) ** 0.6  # (S, S) rounded horizontal threads
    over = (np.floor(tx) + np.floor(ty)) % 2 == 0
    grey = 0.35 + 0.55 * np.where(over, warp, weft)
    return _finish(grey, (0.9, 0.8, 0.6), rng)


def render_striped_plate(size: int, rng: np.random.Generator) -> np.ndarray:
    """Brushed metal plate: broad stripes plus fine streaks along the brushing direction."""
    yy, _ = _coordinates(size, rng, max_angle_deg=3.0)
    period = rng.uniform(1 / 18, 1 / 14)
    stripes = 0.5 + 0.2 * np.sin(2 * np.pi * (yy / period + rng.uniform(0, 1)))  # (S, S)
    rows = np.clip((yy * size).astype(int), 0, size - 1)
    streaks = rng.normal(0, 0.05, size=size)[rows]  # (S, S), constant along each brushed line
    return _finish(np.clip(stripes + streaks, 0, 1), (0.8, 0.85, 0.9), rng)


def render_grid(size: int, rng: np.random.Generator) -> np.ndarray:
    """Dark wire grid on a light backing, cell size and offset jittered."""
    yy, xx = _coordinates(size, rng, max_angle_deg=2.0)
    cell = rng.uniform(1 / 9, 1 / 7)
    fy, fx = (yy / cell + rng.uniform(0, 1)) % 1.0, (xx / cell + rng.uniform(0, 1)) % 1.0
    distance = np.minimum(np.minimum(fy, 1 - fy), np.minimum(fx, 1 - fx))  # (S, S) to the nearest wire
    grey = np.where(distance < 0.08, 0.2, 0.8)
    return _finish(grey, (1.0, 1.0, 1.0), rng)


PARTS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "round_part": render_round_part,
    "woven": render_woven,
    "striped_plate": render_striped_plate,
    "grid": render_grid,
}


def render_part(category: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A normal (S, S, 3) uint8 image of a procedural category (one of `PARTS`)."""
    _check_part(category)
    return PARTS[category](size, rng)


def _check_part(category: str) -> None:
    if category not in PARTS:
        raise ValueError(f"unknown synthetic category '{category}'; choose from {', '.join(PARTS)}")


# --- writing a dataset in the MVTec AD layout -----------------------------------------------------------


def write_synthetic_dataset(
    out: Path | str,
    categories: Sequence[str] | None = None,
    n_train: int = 8,
    n_test_good: int = 4,
    n_test_bad: int = 4,
    size: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write procedural parts in the MVTec AD layout under `out`; returns `out`.

    Per category: `n_train` normal images in train/good, `n_test_good` in test/good, and `n_test_bad`
    per anomaly type (test/cut_paste, test/texture_blend) with {0, 255} masks in ground_truth/<type>/
    <n>_mask.png. Each image depends only on (seed, category, split, index), so subsets and counts do not
    change the other images. Refuses to write into an existing category folder.
    """
    out = Path(out)
    categories = list(categories) if categories else list(PARTS)
    for category in categories:
        _check_part(category)
        if (out / category).exists():
            raise FileExistsError(f"{out / category} already exists; remove it or choose another folder")
    if min(n_train, n_test_good, n_test_bad) < 0 or n_train < 1 or size < 16:
        raise ValueError("need n_train >= 1, n_test_good >= 0, n_test_bad >= 0 and size >= 16")
    total = len(categories) * (n_train + n_test_good + n_test_bad * len(ANOMALIES))
    with tqdm(total=total, desc="synthesising", unit="img", disable=not progress) as bar:
        for category in categories:
            _write_category(out / category, category, n_train, n_test_good, n_test_bad, size, seed, bar)
    meta = {
        "synthetic": True,
        "note": "procedural images for exercising code; not a benchmark",
        "categories": categories,
        "n_train": n_train,
        "n_test_good": n_test_good,
        "n_test_bad_per_type": n_test_bad,
        "size": size,
        "seed": seed,
    }
    (out / "synthetic.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def _write_category(
    folder: Path, category: str, n_train: int, n_good: int, n_bad: int, size: int, seed: int, bar: tqdm
) -> None:
    category_id = list(PARTS).index(category)

    def rng(split: int, index: int) -> np.random.Generator:
        return np.random.default_rng((seed, category_id, split, index))

    for split, (subdir, count) in enumerate([("train/good", n_train), ("test/good", n_good)]):
        for i in range(count):
            _save(folder / subdir / f"{i:03d}.png", render_part(category, size, rng(split, i)))
            bar.update()
    for split, (defect, make_anomaly) in enumerate(ANOMALIES.items(), start=2):
        for i in range(n_bad):
            generator = rng(split, i)
            image, mask = make_anomaly(render_part(category, size, generator), generator)
            _save(folder / "test" / defect / f"{i:03d}.png", image)
            _save(folder / "ground_truth" / defect / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)
            bar.update()


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
