"""Shapes and invariants of every DCP-SFR head; gradients reach only the heads."""

from __future__ import annotations

import pytest
import torch

from model import create_detector
from model.heads import ACL, CACA, Amplifier, ImageScoreHead, top_fraction_mean
from model.heads.acl import CrossAttentionBlock
from model.network import ReferenceFeatures
from model.training.losses import dice, edge_dice, focal, image_bce

B, K, D = 3, 2, 24


def test_caca_shapes_and_probability_range():
    caca = CACA(n_layers=4, clip_width=40, embed_dim=16, temperature=0.07, amplifier_channels=8)
    s_init, s_amp = caca(torch.randn(B, 4, 6 * 5, 40), torch.randn(2, 16), grid=(6, 5))
    assert s_init.shape == (B, 30) and s_amp.shape == (B, 6, 5)
    assert s_init.min() >= 0 and s_init.max() <= 1 and s_amp.min() >= 0 and s_amp.max() <= 1


def test_amplifier_starts_monotone_and_widens_contrast():
    amp = Amplifier(8)
    s = torch.linspace(0.4, 0.6, 9).view(1, 1, 3, 3)
    out = torch.sigmoid(amp(s)).flatten()
    assert torch.all(out[1:] > out[:-1])
    assert (out.max() - out.min()) > 2 * (s.max() - s.min())


def test_acl_shapes_mean_and_concat():
    for kv in ("mean", "concat"):
        acl = ACL(D, heads=3, n_blocks=2, kv_mode=kv)
        f_rec, delta = acl(torch.randn(B, 16, D), torch.rand(B, 16), torch.randn(1, K, 16, D))
        assert f_rec.shape == (B, 16, D) and delta.shape == (B, 16)
        assert (delta >= 0).all()
    assert ACL(D, 3, 1, "concat").reference_kv(torch.randn(B, K, 16, D)).shape == (B, K * 16, D)
    assert ACL(D, 3, 1, "mean").reference_kv(torch.randn(B, K, 16, D)).shape == (B, 16, D)


def test_acl_position_with_full_cue_cannot_copy_its_own_query():
    torch.manual_seed(0)
    acl = ACL(D, heads=3, n_blocks=3).eval()
    g_p = torch.randn(1, 16, D)
    refs = torch.randn(1, K, 16, D)
    s_amp = torch.zeros(1, 16)
    s_amp[0, 5] = 1.0
    changed = g_p.clone()
    changed[0, 5] = torch.randn(D) * 10  # a very different query at the cued position
    changed[0, 6] = torch.randn(D) * 10  # and at an uncued one
    f_a, _ = acl(g_p, s_amp, refs)
    f_b, _ = acl(changed, s_amp, refs)
    torch.testing.assert_close(f_a[0, 5], f_b[0, 5])  # rebuilt from references alone
    moved = (f_a[0, 6] - f_b[0, 6]).norm() / f_a[0, 6].norm()
    assert moved > 0.5  # an uncued position does carry its query (about 8-11x its norm for seeds 0-4)
    others = [i for i in range(16) if i not in (5, 6)]
    torch.testing.assert_close(f_a[0, others], f_b[0, others])  # queries never mix


def test_cross_attention_block_shape():
    block = CrossAttentionBlock(D, 3)
    assert block(torch.randn(B, 7, D), torch.randn(B, 4, D)).shape == (B, 7, D)


def test_image_score_head_shapes_and_top_p_bound():
    head = ImageScoreHead(D, heads=3, hidden=8, mu_local=2.0, p_max=0.1)
    y_global, y_local, p = head(torch.randn(B, D), torch.randn(1, K, D), torch.rand(B), torch.rand(B, 4, 4))
    assert y_global.shape == y_local.shape == p.shape == (B,)
    assert (p > 0).all() and (p <= 0.1).all()


def test_top_fraction_mean_hard_and_soft():
    values = torch.arange(100.0).view(1, 100)
    assert top_fraction_mean(values, 0.01).item() == 99.0
    assert top_fraction_mean(values, 0.05).item() == pytest.approx(97.0)
    soft = top_fraction_mean(values, torch.tensor([0.05], requires_grad=True), softness=1.0)
    assert soft.item() == pytest.approx(97.0, abs=0.6)
    fraction = torch.tensor([0.05], requires_grad=True)
    top_fraction_mean(values, fraction, softness=1.0).backward()
    assert fraction.grad is not None and fraction.grad.item() < 0  # a larger fraction lowers the mean


def test_only_head_parameters_receive_gradients():
    det = create_detector("tiny", device="cpu", heads_file="random")
    net = det.network
    net.train()
    images = torch.randn(2, 3, det.config.dino.image_size, det.config.dino.image_size)
    clip_in = torch.randn(2, 3, det.config.clip.image_size, det.config.clip.image_size)
    dino = net.extract_dino(images)
    clip = net.extract_clip(clip_in)
    refs = ReferenceFeatures(dino.patch_tokens[:1, None].detach(), dino.cls_token[:1, None].detach())
    s_cos = torch.rand(2, dino.patch_tokens.shape[1])
    out = net.run_heads(clip, dino, refs, s_cos, net.text_features())
    seg_logits = net.heads.seg_calibration(out.s_hat)
    masks = torch.zeros_like(seg_logits)
    masks[:, 2:5, 2:5] = 1
    loss = (
        image_bce(out.y_hat, torch.tensor([0.0, 1.0]))
        + focal(seg_logits, masks)
        + dice(torch.sigmoid(seg_logits), masks)
        + edge_dice(torch.sigmoid(seg_logits), masks)
    )
    loss.backward()
    for name, param in net.named_parameters():
        if name.startswith("heads."):
            assert param.requires_grad, name
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
        else:
            assert not param.requires_grad and param.grad is None, name


def test_local_score_soft_top_k_is_hard_at_inference():
    torch.manual_seed(0)
    head = ImageScoreHead(dino_width=8, heads=2, hidden=4, mu_local=2.0, p_max=0.1)
    s_hat = torch.rand(2, 10, 10)
    args = (torch.randn(2, 8), torch.randn(1, 3, 8), torch.rand(2), s_hat)
    head.eval()
    _, y_local, p = head(*args)
    torch.testing.assert_close(
        y_local, torch.stack([top_fraction_mean(s_hat[i].flatten()[None], p[i])[0] for i in range(2)])
    )
    head.train()
    _, y_soft, _ = head(*args)
    assert not torch.allclose(y_soft, y_local)
