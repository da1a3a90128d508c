"""Linear probes: depth binning round trip, heads learning known answers, seg metrics,
and the segmentation-folder probe end to end on a small generated labelled set."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.threads import cpu_threads
from fit3d_ros.training.fit3d.config import EvalConfig
from fit3d_ros.training.fit3d.evaluate import read_seg_folder, run_seg_probe
from fit3d_ros.training.fit3d.probes import (
    DepthBins,
    bin_probs,
    depth_metrics,
    seg_metrics,
    seg_scores,
    train_depth_probe,
    train_seg_probe,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: small ops on a shared 2-core machine are far faster that way."""
    with cpu_threads(1):
        yield


def test_depth_bins_round_trip():
    bins = DepthBins(0.5, 4.5, 256)
    d = torch.linspace(0.5, 4.5 - 1e-6, 1001)
    k = bins.index(d)
    c = bins.centres()[k]
    assert torch.all((c - d.double()).abs() <= bins.width / 2 + 1e-9)
    assert torch.equal(bins.index(bins.centres()), torch.arange(256))
    one_hot = torch.nn.functional.one_hot(k, 256).double().T[None]  # (1,256,M)
    assert torch.allclose(bins.expected(one_hot)[0], c)
    assert bins.index(torch.tensor([-1.0, 99.0])).tolist() == [0, 255]  # clipped


def test_bin_probs_normalise_and_bad_bins():
    p = bin_probs(torch.randn(2, 256, 3, 3))
    assert torch.all(p > 0) and torch.allclose(p.sum(1), torch.ones(2, 3, 3))
    with pytest.raises(ValueError):
        DepthBins(2.0, 1.0)
    with pytest.raises(ValueError):
        DepthBins(0.0, 1.0, 1)


def test_depth_probe_learns_depth_from_informative_features():
    # patch features = one-hot of 4 depth levels; the probe must read depth from them
    rng = np.random.default_rng(0)
    levels = torch.tensor([1.0, 2.0, 3.0, 4.0])
    patches, cls, depths = [], [], []
    for _ in range(12):
        lab = torch.from_numpy(rng.integers(0, 4, (3, 4)))
        patches.append(torch.nn.functional.one_hot(lab, 4).permute(2, 0, 1).float())
        cls.append(torch.zeros(4))
        depths.append(levels[lab].repeat_interleave(4, 0).repeat_interleave(4, 1))
    bins = DepthBins(0.0, 5.0, 256)
    probe = train_depth_probe(patches[:8], cls[:8], depths[:8], bins, 300, 0.05, upsample=1)
    m = depth_metrics(probe, patches[8:], cls[8:], depths[8:])
    d = torch.cat([x.flatten() for x in depths[8:]])
    baseline = float(((d - d.mean()) ** 2).mean().sqrt())  # constant predictor
    assert m["pixels"] == d.numel() and m["rmse"] < 0.5 * baseline


def test_seg_scores_closed_form():
    conf = np.array([[3, 1], [0, 4]])
    s = seg_scores(conf)
    assert s["miou"] == pytest.approx((0.75 + 0.8) / 2)
    assert s["macc"] == pytest.approx((0.75 + 1.0) / 2)
    assert s["aacc"] == pytest.approx(7 / 8)


def test_seg_probe_on_one_hot_features_is_perfect():
    rng = np.random.default_rng(1)
    patches, labels = [], []
    for _ in range(6):
        lab = torch.from_numpy(rng.integers(0, 3, (4, 4)))
        patches.append(torch.nn.functional.one_hot(lab, 3).permute(2, 0, 1).float() * 4)
        labels.append(lab)  # labels at patch resolution: upsampling is the identity
    probe = train_seg_probe(patches[:4], labels[:4], 3, 150, 0.1)
    assert seg_metrics(probe, patches[4:], labels[4:], 3)["miou"] == pytest.approx(1.0)


def _write_folder(root, n=10, size=56):
    """Images with a red or blue square on grey noise; label 1 red, 2 blue, 0 background."""
    rng = np.random.default_rng(2)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        img = rng.integers(100, 140, (size, size, 3)).astype(np.uint8)
        lab = np.zeros((size, size), np.uint8)
        cls = 1 + i % 2
        y, x = rng.integers(0, size // 2, 2) // 14 * 14
        img[y:y + 28, x:x + 28] = (220, 30, 30) if cls == 1 else (30, 30, 220)
        lab[y:y + 28, x:x + 28] = cls
        lab[0, 0] = 255  # one ignored pixel
        Image.fromarray(img).save(root / "images" / f"{i:03d}.png")
        Image.fromarray(lab).save(root / "labels" / f"{i:03d}.png")
    (root / "classes.txt").write_text("background\nred\nblue\n")


def test_seg_folder_probe_end_to_end(tmp_path):
    _write_folder(tmp_path)
    names, split = read_seg_folder(tmp_path, holdout_every=5)
    assert names == ["background", "red", "blue"] and len(split["val"]) == 2
    assert split["train"][0][2][0, 0] == -1  # 255 -> ignore
    spec = BackboneSpec(name="vit_tiny_test", random_init=True)
    cfg = EvalConfig.tiny(token_budget=16, probe_steps=150, probe_lr=0.05, target_width=56)
    r = run_seg_probe(tmp_path, spec, None, cfg, holdout_every=5)
    assert r["backbone"]["random_init"] and r["data"]["val"] == ["004", "009"]
    assert r["segmentation"]["original"]["aacc"] > 0.75  # colour is linearly decodable


def test_seg_folder_bad_input(tmp_path):
    with pytest.raises(ValueError, match="images/ and labels/"):
        read_seg_folder(tmp_path)
    _write_folder(tmp_path, n=3)
    (tmp_path / "labels" / "001.png").unlink()
    with pytest.raises(ValueError, match="missing label map"):
        read_seg_folder(tmp_path)
