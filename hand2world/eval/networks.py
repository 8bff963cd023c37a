"""Metrics that need standard pretrained networks: LPIPS (AlexNet) and FVD (I3D), from user-supplied weights only.

Nothing is downloaded. The files are looked up in one folder, ``metric_weights_dir()``:
``--metric-weights DIR``, else ``$HAND2WORLD_METRIC_WEIGHTS``, else ``$HAND2WORLD_HOME/metrics``
(``~/.cache/hand2world/metrics``). When a file is missing the metric is reported as
``"unavailable"`` with the reason — never estimated some other way.

=============================  =====================================================================
file                           what (where it comes from)
=============================  =====================================================================
``alexnet-owt-7be5be79.pth``   torchvision's ImageNet AlexNet state dict (``features.*`` keys used)
``lpips_alex.pth``             LPIPS v0.1 linear layers for AlexNet: the ``lpips`` package's
                               ``lpips/weights/v0.1/alex.pth`` (keys ``lin0.model.1.weight`` .. ``lin4``)
``i3d_torchscript.pt``         the TorchScript I3D (Kinetics-400) used by StyleGAN-V and most
                               video-generation papers for FVD; called as
                               ``detector(x, rescale=False, resize=False, return_features=True)``
                               on ``x [N, 3, T, 224, 224]`` in [-1, 1] -> 400-D logits-layer features
=============================  =====================================================================

Design choices:
- LPIPS is re-implemented (AlexNet trunk + LPIPS's scaling layer, unit-normalised features,
  learned 1x1 weights, spatial mean, sum over the five ReLU layers) so torchvision is not needed;
  the ``.pth`` files are read with ``torch.load(weights_only=True)`` (tensors only).
- FVD: each video is cut into 16-frame windows (non-overlapping, from frame 1, the first
  generated frame), frames resized to 224x224 (bilinear), features of real and generated windows
  fitted with Gaussians, Fréchet distance between them. With few test videos FVD is biased high
  and noisy; the count of windows is reported beside it. The TorchScript file is code: load only
  a file you trust.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

__all__ = ["LPIPS", "FVD_FILE", "LPIPS_FILES", "frechet_distance", "fvd", "load_fvd_detector", "load_lpips",
           "metric_weights_dir", "video_windows"]

LPIPS_FILES = ("alexnet-owt-7be5be79.pth", "lpips_alex.pth")
FVD_FILE = "i3d_torchscript.pt"
FVD_WINDOW = 16


def metric_weights_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder metric network weights are read from (see the module notes for the order)."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("HAND2WORLD_METRIC_WEIGHTS")
    if env:
        return Path(env).expanduser()
    from hand2world.paths import home

    return home() / "metrics"


class _AlexTrunk(nn.Module):
    """torchvision AlexNet ``features`` layout; ``forward`` returns the five ReLU outputs LPIPS uses."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))
        self.taps = (1, 4, 7, 9, 11)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features[:12]):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out


class LPIPS(nn.Module):
    """LPIPS distance (AlexNet, v0.1): ``lpips(a, b) -> [N]`` for images ``[N, 3, H, W]`` in [-1, 1]."""

    CHANNELS = (64, 192, 384, 256, 256)

    def __init__(self) -> None:
        super().__init__()
        self.net = _AlexTrunk()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self.CHANNELS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def load_weights(self, alexnet: dict[str, torch.Tensor], lin: dict[str, torch.Tensor]) -> None:
        """Load torchvision AlexNet (``features.*``) and LPIPS linear (``linK.model.1.weight``) state dicts."""
        self.net.load_state_dict({k: v for k, v in alexnet.items() if k.startswith("features.")})
        for k, layer in enumerate(self.lins):
            layer.weight.data.copy_(lin[f"lin{k}.model.1.weight"])

    @torch.no_grad()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa = self.net((a - self.shift) / self.scale)
        fb = self.net((b - self.shift) / self.scale)
        total = torch.zeros(a.shape[0], device=a.device)
        for x, y, lin in zip(fa, fb, self.lins, strict=True):
            x = x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            y = y / (y.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((x - y) ** 2).mean(dim=(1, 2, 3))
        return total

    def frames(self, pred: np.ndarray, target: np.ndarray, batch: int = 16) -> np.ndarray:
        """Per-frame LPIPS ``[T]`` of uint8 clips ``[T, H, W, 3]``."""
        out = []
        for s in range(0, len(pred), batch):
            a = torch.from_numpy(pred[s:s + batch]).permute(0, 3, 1, 2).float() / 127.5 - 1
            b = torch.from_numpy(target[s:s + batch]).permute(0, 3, 1, 2).float() / 127.5 - 1
            out.append(self(a, b).numpy())
        return np.concatenate(out) if out else np.zeros(0)


def load_lpips(folder: str | os.PathLike | None = None) -> tuple[LPIPS | None, str]:
    """``(model, "")`` when both LPIPS files are in ``folder``; else ``(None, reason)``."""
    root = metric_weights_dir(folder)
    missing = [f for f in LPIPS_FILES if not (root / f).is_file()]
    if missing:
        return None, f"missing {', '.join(missing)} in {root}"
    model = LPIPS()
    model.load_weights(torch.load(root / LPIPS_FILES[0], map_location="cpu", weights_only=True),
                       torch.load(root / LPIPS_FILES[1], map_location="cpu", weights_only=True))
    return model.eval(), ""


def load_fvd_detector(folder: str | os.PathLike | None = None) -> tuple[torch.jit.ScriptModule | None, str]:
    """``(detector, "")`` when ``i3d_torchscript.pt`` is in ``folder``; else ``(None, reason)``."""
    path = metric_weights_dir(folder) / FVD_FILE
    if not path.is_file():
        return None, f"missing {FVD_FILE} in {path.parent}"
    return torch.jit.load(str(path), map_location="cpu").eval(), ""


def video_windows(video: np.ndarray, window: int = FVD_WINDOW, start: int = 1) -> list[np.ndarray]:
    """Non-overlapping ``window``-frame pieces of ``video [T, H, W, 3]`` from frame ``start`` (shorter: none)."""
    return [video[s:s + window] for s in range(start, len(video) - window + 1, window)]


@torch.no_grad()
def _i3d_features(detector: torch.jit.ScriptModule, windows: list[np.ndarray], batch: int = 4) -> np.ndarray:
    feats = []
    for s in range(0, len(windows), batch):
        x = torch.from_numpy(np.stack(windows[s:s + batch])).float()  # [N, T, H, W, 3]
        n, t, h, w, _ = x.shape
        x = x.permute(0, 1, 4, 2, 3).reshape(n * t, 3, h, w)
        x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
        x = (x / 127.5 - 1).reshape(n, t, 3, 224, 224).permute(0, 2, 1, 3, 4).contiguous()
        feats.append(detector(x, rescale=False, resize=False, return_features=True).float().numpy())
    return np.concatenate(feats).astype(np.float64)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to features ``a [N, D]`` and ``b [M, D]``."""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1 = np.atleast_2d(np.cov(a, rowvar=False)) if len(a) > 1 else np.zeros((a.shape[1], a.shape[1]))
    s2 = np.atleast_2d(np.cov(b, rowvar=False)) if len(b) > 1 else np.zeros((b.shape[1], b.shape[1]))
    covmean = linalg.sqrtm(s1 @ s2)
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def fvd(detector: torch.jit.ScriptModule, generated: list[np.ndarray], real: list[np.ndarray]) -> dict:
    """FVD between lists of uint8 videos ``[T, H, W, 3]`` (16-frame windows); ``{"fvd", "windows"}``."""
    gw = [w for v in generated for w in video_windows(v)]
    rw = [w for v in real for w in video_windows(v)]
    if len(gw) < 2 or len(rw) < 2:
        return {"fvd": "unavailable", "reason": f"needs >= 2 windows of {FVD_WINDOW} frames, got {len(gw)}",
                "windows": len(gw)}
    return {"fvd": frechet_distance(_i3d_features(detector, gw), _i3d_features(detector, rw)), "windows": len(gw)}
