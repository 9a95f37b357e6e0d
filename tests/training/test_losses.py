"""Loss functions against hand computations."""

from __future__ import annotations

import pytest
import torch

from model.training.losses import dice, edge_dice, focal, image_bce, sobel_magnitude


def square_mask(size: int = 16) -> torch.Tensor:
    mask = torch.zeros(1, size, size)
    mask[0, 4:10, 5:12] = 1.0
    return mask


def test_dice_is_zero_for_perfect_and_near_one_for_disjoint():
    mask = square_mask()
    assert dice(mask, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert dice(1 - mask, mask).item() > 0.95


def test_edge_dice_zero_for_perfect_prediction_and_positive_when_shifted():
    mask = square_mask()
    assert edge_dice(mask, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert edge_dice(torch.roll(mask, 3, dims=2), mask).item() > 0.3


def test_sobel_is_zero_on_flat_and_positive_on_edges():
    assert torch.allclose(sobel_magnitude(torch.ones(1, 8, 8)), torch.zeros(1, 8, 8), atol=1e-5)
    edges = sobel_magnitude(square_mask())
    assert edges[0, 4, 8] > 0 and edges[0, 7, 8] == pytest.approx(0.0, abs=1e-5)


def test_focal_matches_hand_formula():
    logits, target = torch.tensor([[[2.0, -1.0]]]), torch.tensor([[[1.0, 0.0]]])
    p = torch.sigmoid(logits)
    p_t = torch.where(target == 1, p, 1 - p)
    alpha_t = torch.where(target == 1, torch.tensor(0.9), torch.tensor(0.1))
    expected = (-alpha_t * (1 - p_t) ** 2 * torch.log(p_t)).mean()
    assert focal(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)


def test_image_bce():
    logits = torch.tensor([0.0, 0.0])
    assert image_bce(logits, torch.tensor([0, 1])).item() == pytest.approx(0.6931, rel=1e-3)
