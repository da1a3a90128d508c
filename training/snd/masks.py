"""Segment masks for mask-aware upscaling and semantic blending.

Design note: a mask is an integer label map (H,W) at the render size. When the log has
none (no mask folder / topic), segments come from discontinuities computed here: a pixel
is a boundary when its right or lower neighbour differs in depth by more than
`depth_edge` (relative) or in colour by more than `color_edge`; the non-boundary pixels
form 4-connected components; components under `min_segment` of the image and the
boundary pixels take a neighbouring segment's label. Connected components are written
here (min-label propagation with pointer jumping, in torch on the device) because no
dependency of the package provides them (scipy is not one). Given masks are read from
``DIR/NNNNNN.png`` (NNNNNN = the frame's index in its source, any integer image) or from
an image topic of the bag, paired with the colour frames by stamp.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from fit3d_ros.logs.scene_io import decode, replay
from fit3d_ros.msgs import stamp_to_ns
from fit3d_ros.msgs.image import image_to_numpy

BIG = torch.iinfo(torch.int64).max


def _neighbours_min(lab: Tensor) -> Tensor:
    """Minimum of each pixel's 4 neighbours (BIG outside the image)."""
    p = F.pad(lab[None, None].double(), (1, 1, 1, 1), value=float(BIG))[0, 0]
    # float64 holds every pixel index exactly (< 2^53); BIG only marks "none"
    m = torch.minimum(torch.minimum(p[:-2, 1:-1], p[2:, 1:-1]),
                      torch.minimum(p[1:-1, :-2], p[1:-1, 2:]))
    return torch.where(m >= float(BIG), BIG, m.long())


def connected_components(free: Tensor) -> Tensor:
    """4-connected components of the True pixels of `free` (H,W): each pixel's label is the
    smallest flat index of its component; -1 for False pixels."""
    h, w = free.shape
    idx = torch.arange(h * w, device=free.device).reshape(h, w)
    lab = torch.where(free, idx, BIG)
    while True:
        nb = _neighbours_min(lab)
        new = torch.where(free, torch.minimum(lab, nb), BIG)
        flat = new.reshape(-1)
        jumped = torch.where(free, flat[new.clamp_max(h * w - 1)].reshape(h, w), BIG)
        new = torch.minimum(new, jumped)  # pointer jumping: follow the label's own label
        if torch.equal(new, lab):
            break
        lab = new
    return torch.where(free, lab, -1)


def _fill(lab: Tensor) -> Tensor:
    """Give every -1 pixel the largest label among its labelled neighbours, repeatedly."""
    while bool((lab < 0).any()):
        p = F.pad(lab[None, None].double(), (1, 1, 1, 1), value=-1.0)[0, 0]
        nb = torch.maximum(torch.maximum(p[:-2, 1:-1], p[2:, 1:-1]),
                           torch.maximum(p[1:-1, :-2], p[1:-1, 2:])).long()
        new = torch.where(lab < 0, nb, lab)
        if torch.equal(new, lab):  # nothing labelled at all
            return torch.zeros_like(lab)
        lab = new
    return lab


def relabel(lab: Tensor) -> Tensor:
    """Labels renumbered 0..n-1 (in order of their values)."""
    return torch.unique(lab, return_inverse=True)[1].reshape(lab.shape)


def discontinuity_masks(rgb: Tensor, depth: Tensor, depth_edge: float = 0.05,
                        color_edge: float = 0.12, min_segment: float = 0.002) -> Tensor:
    """Segments (H,W) long 0..n-1 bounded by depth and colour discontinuities."""
    z = depth
    edge = torch.zeros(z.shape, dtype=torch.bool, device=z.device)
    for dim in (0, 1):
        n = z.shape[dim]
        a, b = z.narrow(dim, 0, n - 1), z.narrow(dim, 1, n - 1)
        with torch.no_grad():
            dz = (a - b).abs() / torch.minimum(a, b)
            jump = torch.isfinite(dz) & (dz > depth_edge)
            ca, cb = rgb.narrow(dim, 0, n - 1), rgb.narrow(dim, 1, n - 1)
            jump |= (ca - cb).abs().amax(-1) > color_edge
        edge.narrow(dim, 0, n - 1).logical_or_(jump)
    lab = connected_components(~edge)
    ids, counts = torch.unique(lab, return_counts=True)
    small = ids[(counts < min_segment * z.numel()) & (ids >= 0)]
    lab = torch.where(torch.isin(lab, small), -1, lab)
    return relabel(_fill(lab))


def resize_labels(labels: np.ndarray | Tensor, width: int, height: int) -> Tensor:
    """An integer label image (H,W) resized to (height,width) by nearest neighbour."""
    t = torch.as_tensor(np.asarray(labels).astype(np.int64))
    if t.ndim == 3:  # colour-coded masks: one label per distinct colour
        t = relabel(t[..., 0] * 65536 + t[..., 1] * 256 + t[..., 2])
    if t.ndim != 2:
        raise ValueError(f"a mask must be an (H,W) or (H,W,3) image, got {tuple(t.shape)}")
    out = F.interpolate(t[None, None].double(), size=(height, width), mode="nearest")
    return relabel(out[0, 0].long())


def folder_masks(folder: str | Path, indices: list[int]) -> list[np.ndarray]:
    """The masks ``folder/NNNNNN.png`` of frames `indices` (FileNotFoundError naming one)."""
    out = []
    for i in indices:
        p = Path(folder) / f"{i:06d}.png"
        if not p.is_file():
            raise FileNotFoundError(f"mask {p} for frame {i} does not exist")
        out.append(np.asarray(Image.open(p)))
    return out


def topic_masks(bag: str | Path, topic: str, stamps: list[int]) -> list[np.ndarray]:
    """The images of `topic` whose header stamps equal `stamps` (ValueError if missing)."""
    want, found = set(stamps), {}
    for m, _ in replay(bag, [topic]):
        s = decode(m, lambda msg: stamp_to_ns(msg.header.stamp), bag)
        if s in want:
            found[s] = decode(m, image_to_numpy, bag)
    missing = [s for s in stamps if s not in found]
    if missing:
        raise ValueError(f"{bag}: no mask on {topic} for {len(missing)} frames (first stamp "
                         f"{missing[0]})")
    return [found[s] for s in stamps]
