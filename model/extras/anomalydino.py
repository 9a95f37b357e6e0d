"""AnomalyDINO's optional extras (Damm et al., WACV 2025; github.com/dammsi/AnomalyDINO, `src/utils.py`,
`src/backbones.py`): rotated reference views for the memory bank, and PCA background masking of patches.

Both are off by default (`inference.reference_rotations`, `inference.background_masking`).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

ROTATION_ANGLES = (0, 45, 90, 135, 180, 225, 270, 315)  # AnomalyDINO's augment_image
MASK_THRESHOLD = 10.0  # on the first principal component of the patch tokens
MASK_BORDER = 0.2  # the centre crop (20 % off each side) must be mostly foreground, else the mask flips
MASK_KEEP_CENTRE = 0.35


def rotated(image: Image.Image, angle: float) -> Image.Image:
    """`image` (RGB) rotated by `angle` degrees about (W/2, H/2), bilinear, mirrored borders, same size.

    As AnomalyDINO's `rotate_image` (cv2.warpAffine, INTER_LINEAR, BORDER_REFLECT_101), with scipy.
    """
    array = np.asarray(image.convert("RGB"), dtype=np.float32)  # (H, W, 3)
    height, width = array.shape[:2]
    cos, sin = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    matrix = np.array([[cos, sin], [-sin, cos]])  # output (row, col) -> input (row, col) about the centre
    centre = np.array([height / 2, width / 2])
    offset = centre - matrix @ centre
    channels = [
        ndimage.affine_transform(array[:, :, c], matrix, offset=offset, order=1, mode="mirror") for c in range(3)
    ]
    return Image.fromarray(np.clip(np.rint(np.stack(channels, axis=-1)), 0, 255).astype(np.uint8))


def rotated_views(image: Image.Image) -> list[Image.Image]:
    """The eight rotations AnomalyDINO adds to the memory bank for objects that appear in any orientation."""
    return [image if angle == 0 else rotated(image, angle) for angle in ROTATION_ANGLES]


def background_mask(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Foreground patches (Nd,) bool from one image's DINOv2 patch tokens (Nd, Dd), as AnomalyDINO's
    `compute_background_mask(masking_type=True)`: first principal component > 10, flipped when the centre crop
    is mostly background, then a 3 x 3 dilation and closing."""
    from sklearn.decomposition import PCA  # scikit-learn only with background masking on: it takes a second to load

    first = PCA(n_components=1, svd_solver="randomized", random_state=0).fit_transform(tokens.float().cpu().numpy())[
        :, 0
    ]  # (Nd,)
    mask = (first > MASK_THRESHOLD).reshape(grid)
    h, w = grid
    centre = mask[int(h * MASK_BORDER) : int(h * (1 - MASK_BORDER)), int(w * MASK_BORDER) : int(w * (1 - MASK_BORDER))]
    if centre.sum() <= centre.size * MASK_KEEP_CENTRE:
        mask = (-first > MASK_THRESHOLD).reshape(grid)
    structure = np.ones((3, 3), dtype=bool)
    mask = ndimage.binary_dilation(mask, structure)
    mask = ndimage.binary_closing(mask, structure)
    return torch.from_numpy(mask.reshape(-1))
