"""Wan 2.1 compatibility: diffusers' WanTransformer3DModel weights load into our DiT and give the same output."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import micro_dit

from hand2world.models import Conditioning, DiT
from hand2world.models.wan import WanVAE, from_diffusers_state_dict, init_from_wan

diffusers = pytest.importorskip("diffusers", reason="diffusers missing: pip install -e .[wan] (part of dev)")

CFG = micro_dit(latent_channels=4, dim=48, ffn_dim=96, text_dim=40, vae_factor=8)


def _wan(in_channels: int, seed: int = 0):
    torch.manual_seed(seed)
    wan = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=CFG.num_heads, attention_head_dim=CFG.head_dim,
        in_channels=in_channels, out_channels=CFG.latent_channels, text_dim=CFG.text_dim, freq_dim=CFG.freq_dim,
        ffn_dim=CFG.ffn_dim, num_layers=CFG.num_layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        eps=CFG.eps)
    with torch.no_grad():  # non-trivial norms and biases so the mapping is really exercised
        for name, p in wan.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return wan.eval()


def test_state_dict_mapping_is_complete_and_exact():
    wan = _wan(CFG.in_channels)
    ours = DiT(CFG).eval()
    converted, unused = from_diffusers_state_dict(wan.state_dict())
    assert not unused
    missing, unexpected = ours.load_state_dict(converted, strict=False)
    assert not unexpected and all(k.startswith("camera_adapter.") for k in missing)

    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, CFG.in_channels, 3, 8, 12, generator=g)
    t = torch.tensor([0.25, 0.8])
    text = torch.randn(2, 5, CFG.text_dim, generator=g)
    c = CFG.latent_channels
    with torch.no_grad():
        ref = wan(x, t * 1000, text, return_dict=False)[0]
        cond = Conditioning(control=x[:, c:2 * c], scene=x[:, 2 * c:], text=text,
                            rays=torch.randn(2, 6, 3, 64, 96, generator=g))  # adapter is zero at init
        out = ours(x[:, :c], t, cond)
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() < 1e-4


def test_init_from_wan_with_narrower_input():
    """Wan's 16-channel-style patch embedding fills our noisy-latent channels; the rest start at zero."""
    wan = _wan(CFG.latent_channels)
    ours = DiT(CFG).eval()
    missing = init_from_wan(ours, wan.state_dict())
    assert all(k.startswith("camera_adapter.") for k in missing)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, CFG.latent_channels, 2, 8, 8, generator=g)
    text = torch.randn(1, 3, CFG.text_dim, generator=g)
    t = torch.tensor([0.5])
    with torch.no_grad():
        ref = wan(x, t * 1000, text, return_dict=False)[0]
        cond = Conditioning(control=torch.randn_like(x), text=text)
        out = ours(x, t, dataclasses.replace(cond, keep_hands=torch.zeros(1)))
    assert (out - ref).abs().max().item() < 1e-4


def test_wan_vae_adapter_shapes():
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                     latents_mean=[0.0] * 4, latents_std=[1.0] * 4).eval()
    ae = WanVAE(vae)
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    with torch.no_grad():
        z = ae.encode(video)
        assert z.shape == (1, 4, 2, 2, 2)
        assert ae.decode(z).shape == (1, 3, 5, 16, 16)
