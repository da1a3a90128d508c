"""Mask-aware upscaling (equals bilinear for a uniform mask, never mixes across a mask
edge, matches a per-pixel reference), masks from depth / colour discontinuities
(connected components against a flood-fill reference) and from a bag topic."""
from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fit3d_ros.logs.bag import BagWriter
from fit3d_ros.logs.convert import IMAGE
from fit3d_ros.msgs import rosbags_types
from fit3d_ros.msgs.image import numpy_to_image
from fit3d_ros.training.snd.masks import (
    connected_components,
    discontinuity_masks,
    resize_labels,
    topic_masks,
)
from fit3d_ros.training.snd.upscale import mask_aware_upscale, patch_centre_labels


def test_uniform_mask_equals_bilinear():
    patch = torch.randn(5, 4, 6, generator=torch.Generator().manual_seed(0))
    for size in ((28, 42), (9, 13), (4, 6)):
        labels = torch.zeros(size, dtype=torch.long)
        want = F.interpolate(patch[None], size=size, mode="bilinear", align_corners=False)[0]
        assert torch.allclose(mask_aware_upscale(patch, labels), want, atol=1e-6)
        assert torch.allclose(mask_aware_upscale(patch, labels, "bilinear"), want)


def _reference(patch: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-pixel loops: the four patch centres around each pixel, same-label weights."""
    c, h, w = patch.shape
    H, W = labels.shape
    plab = patch_centre_labels(labels, h, w)
    out = torch.zeros(c, H, W, dtype=torch.float64)
    for y in range(H):
        for x in range(W):
            sy, sx = max((y + 0.5) * h / H - 0.5, 0), max((x + 0.5) * w / W - 0.5, 0)
            y0, x0 = min(int(np.floor(sy)), h - 1), min(int(np.floor(sx)), w - 1)
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            ly, lx = min(sy - y0, 1.0), min(sx - x0, 1.0)
            taps = [(y0, x0, (1 - ly) * (1 - lx)), (y0, x1, (1 - ly) * lx),
                    (y1, x0, ly * (1 - lx)), (y1, x1, ly * lx)]
            same = [(a, b, wt) for a, b, wt in taps if plab[a, b] == labels[y, x]]
            if sum(wt for *_, wt in same) <= 0:
                same = taps
            tot = sum(wt for *_, wt in same)
            for a, b, wt in same:
                out[:, y, x] += wt / tot * patch[:, a, b].double()
    return out.float()


def test_matches_the_per_pixel_reference_and_never_mixes_across_an_edge():
    h, w, H, W = 4, 5, 24, 30
    labels = torch.zeros(H, W, dtype=torch.long)
    labels[:, 13:] = 1          # a vertical edge between patch columns
    labels[17:, :7] = 2         # and a corner block
    plab = patch_centre_labels(labels, h, w)
    # channel k is the indicator of "this patch centre has label k"
    patch = torch.stack([(plab == k).float() for k in range(3)])
    out = mask_aware_upscale(patch, labels)
    assert torch.allclose(out, _reference(patch, labels), atol=1e-6)
    # a pixel with a same-label patch centre among its 4 neighbours gets only that label
    for k in range(3):
        pix = labels == k
        mixed = out[:, pix].sum(0) - out[k, pix]
        has_own = out[k, pix] > 0
        assert torch.all(mixed[has_own].abs() < 1e-6)
    assert torch.allclose(out.sum(0), torch.ones(H, W))  # weights renormalised
    rand = torch.randn(7, h, w)
    assert torch.allclose(mask_aware_upscale(rand, labels), _reference(rand, labels), atol=1e-5)


def _flood(free: np.ndarray) -> np.ndarray:
    """BFS labelling with the same label rule (smallest flat index of the component)."""
    h, w = free.shape
    lab = -np.ones((h, w), np.int64)
    for start in range(h * w):
        y, x = divmod(start, w)
        if not free[y, x] or lab[y, x] >= 0:
            continue
        q = deque([(y, x)])
        lab[y, x] = start
        while q:
            a, b = q.popleft()
            for da, db in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                u, v = a + da, b + db
                if 0 <= u < h and 0 <= v < w and free[u, v] and lab[u, v] < 0:
                    lab[u, v] = start
                    q.append((u, v))
    return lab


def test_connected_components_match_flood_fill():
    rng = np.random.default_rng(0)
    for p in (0.45, 0.6, 0.8):
        free = rng.random((23, 31)) < p
        got = connected_components(torch.from_numpy(free)).numpy()
        assert np.array_equal(got, _flood(free))


def test_masks_split_at_depth_and_colour_discontinuities():
    h, w = 30, 40
    depth = torch.full((h, w), 2.0)
    depth[:, 20:] = 3.0                       # depth step at x = 20
    rgb = torch.full((h, w, 3), 0.5)
    rgb[:10, :20] = torch.tensor([0.9, 0.1, 0.1])  # colour block in the left half
    depth[5, 5] = float("nan")                # a hole is not an edge
    lab = discontinuity_masks(rgb, depth, depth_edge=0.05, color_edge=0.12, min_segment=0.01)
    assert lab[20, 5] != lab[20, 35]          # across the depth step
    assert lab[2, 5] != lab[20, 5]            # across the colour edge
    assert len(torch.unique(lab)) == 3 and int(lab.max()) == 2
    assert (lab[:, 22:] == lab[0, 39]).all() and (lab[12:, :18] == lab[29, 0]).all()
    # smooth depth (a slanted plane) and smooth colour: one segment
    ramp = 2 + torch.linspace(0, 0.5, w)[None].expand(h, w)
    assert int(discontinuity_masks(torch.full((h, w, 3), 0.3), ramp).max()) == 0


def test_masks_from_a_bag_topic_pair_by_stamp(tmp_path):
    types = rosbags_types()
    bag = tmp_path / "masks.mcap"
    labs = {s: np.full((6, 8), s % 7, np.uint16) for s in (10, 20, 30)}
    labs[20][:, 4:] = 9
    with BagWriter(bag) as w:
        for s, lab in labs.items():
            w.write("/masks", IMAGE, s, numpy_to_image(lab, "16UC1", s, "cam", types))
    got = topic_masks(bag, "/masks", [30, 20])
    assert np.array_equal(got[0], labs[30]) and np.array_equal(got[1], labs[20])
    assert resize_labels(got[1], 4, 3).tolist() == [[0, 0, 1, 1]] * 3
    with pytest.raises(ValueError, match="no mask on /masks for 1 frames"):
        topic_masks(bag, "/masks", [10, 15])
