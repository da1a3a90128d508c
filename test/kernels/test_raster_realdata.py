"""Real RGB-D data: Gaussians lifted from one 7-Scenes frame re-render the next one's depth."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fit3d_ros.kernels import rasterize_gaussians

STRIDE = 8  # 640x480 -> 80x60


def _frame(root: Path, idx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    stem = root / f"frame-{idx:06d}"
    depth = np.asarray(Image.open(f"{stem}.depth.png"), dtype=np.float64) / 1000.0
    color = np.asarray(Image.open(f"{stem}.color.jpg").convert("RGB"), dtype=np.float64) / 255
    pose = np.loadtxt(f"{stem}.pose.txt")  # camera -> world
    c = STRIDE // 2
    return depth[c::STRIDE, c::STRIDE], color[c::STRIDE, c::STRIDE], pose


def _lift(depth: np.ndarray, color: np.ndarray, pose: np.ndarray, K: np.ndarray) -> dict:
    """One isotropic Gaussian per valid depth pixel, in world coordinates."""
    v, u = np.nonzero((depth > 0.1) & (depth < 10.0))
    z = depth[v, u]
    pts = np.stack([(u + 0.5 - K[0, 2]) * z / K[0, 0], (v + 0.5 - K[1, 2]) * z / K[1, 1], z], -1)
    world = pts @ pose[:3, :3].T + pose[:3, 3]
    n = len(z)
    f = torch.float32
    return dict(means=torch.tensor(world, dtype=f),
                quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
                scales=torch.tensor(0.8 * z / K[0, 0], dtype=f)[:, None].repeat(1, 3),
                opacities=torch.full((n,), 0.9), colors=torch.tensor(color[v, u], dtype=f),
                features=torch.tensor(np.concatenate([color[v, u], z[:, None]], 1), dtype=f))


def test_lifted_frame_rerenders_a_later_frames_sensor_depth(shared_data):
    root = shared_data / "rgbd" / "7scenes"
    K = np.loadtxt(root / "camera-intrinsics.txt")
    K_low = K.copy()
    K_low[:2] /= STRIDE
    d0, c0, pose0 = _frame(root, 0)
    d1, _, pose1 = _frame(root, 60)  # 2 s later: the camera moved ~0.3 m and turned ~6°
    gaussians = _lift(d0, c0, pose0, K_low)
    viewmat = torch.tensor(np.linalg.inv(pose1), dtype=torch.float32)
    h, w = d1.shape
    outs = {b: rasterize_gaussians(**gaussians, viewmat=viewmat, K=torch.tensor(K_low).float(),
                                   width=w, height=h, backend=b) for b in ("cpu", "torch")}
    out = outs["cpu"]
    for key in ("rgb", "features", "alpha", "depth"):
        err = float((getattr(out, key) - getattr(outs["torch"], key)).abs().max())
        assert err <= 1e-4, key
    # colour and the features carrying the same colour are blended identically
    torch.testing.assert_close(out.features[..., :3], out.rgb, atol=1e-6, rtol=0)
    alpha = out.alpha[..., 0].numpy()
    valid = (d1 > 0.1) & (alpha > 0.5)
    assert valid.mean() > 0.6  # frame 0 covers most of the later view
    rendered = out.depth[..., 0].numpy()[valid] / alpha[valid]
    rel = np.median(np.abs(rendered - d1[valid]) / d1[valid])
    # the frame-0 depth map itself, ignoring the motion, is far off
    both = (d1 > 0.1) & (d0 > 0.1)
    naive = np.median(np.abs(d0[both] - d1[both]) / d1[both])
    assert rel < 0.04 and naive > 3 * rel, (rel, naive)
