"""SnD training end to end on real 7-Scenes frames (tiny ViT, tiny images): the output
loads into our wrapper and plain timm and changes only attention weights, a resumed run
reproduces the uninterrupted one, given masks are read, bad input stops with a clear
error, and the ``fit3d-ros snd`` command prints the documented JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from fit3d_ros.cli.main import main
from fit3d_ros.compat import import_timm
from fit3d_ros.models import build_backbone
from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.threads import cpu_threads
from fit3d_ros.training.fit3d.scenes import load_scene
from fit3d_ros.training.resume import checkpoint_path
from fit3d_ros.training.snd.config import SnDConfig
from fit3d_ros.training.snd.train import snd_train

SPEC = BackboneSpec(name="vit_tiny_test", random_init=True)
SMALL = {"steps": 6, "render_width": 32, "image_width": 56, "token_budget": 12,
         "head_hidden": 32, "head_bottleneck": 8, "prototypes": 64, "save_every": 2,
         "lr": 1e-3, "ema_every": 2, "ema_momentum": 0.5}


@pytest.fixture(autouse=True)
def _one_thread():
    with cpu_threads(1):
        yield


@pytest.fixture(scope="module")
def scene(shared_data):
    return load_scene(shared_data / "rgbd" / "7scenes", frames="0:40:4", holdout_every=5)


def test_output_loads_everywhere_and_changes_only_attention(scene, tmp_path):
    out = tmp_path / "snd.safetensors"
    r = snd_train([scene], SPEC, SnDConfig.tiny(**SMALL), out, progress=False,
                  evaluate=False)
    assert r["steps"] == 6 and np.isfinite([r["loss_first"], r["loss_last"]]).all()
    assert r["teacher"]["updates"] == 3 and r["triples"][0] > 0
    tuned = build_backbone("vit_tiny_test", pretrained=False, weights=out).model.state_dict()
    orig = build_backbone("vit_tiny_test", pretrained=False).model.state_dict()
    changed = {k for k, v in tuned.items() if not torch.equal(v, orig[k])}
    assert changed and all(k.endswith(("attn.qkv.weight", "attn.proj.weight")) for k in changed)
    plain = import_timm().create_model("vit_small_patch14_dinov2", pretrained=False,
                                       num_classes=0, dynamic_img_size=True, depth=2,
                                       embed_dim=48, num_heads=2)
    plain.load_state_dict(load_file(str(out)), strict=True)


@pytest.mark.parametrize("loss", ["dino", "cosine"])
def test_resume_reproduces_the_uninterrupted_run(scene, tmp_path, loss):
    cfg = SnDConfig.tiny(**SMALL, loss=loss)
    full = snd_train([scene], SPEC, cfg, tmp_path / "full.st", progress=False,
                     evaluate=False)
    part = tmp_path / "part.st"
    stopped = snd_train([scene], SPEC, cfg, part, progress=False, stop_at=3, evaluate=False)
    assert stopped["stopped"] and not part.exists() and checkpoint_path(part).exists()
    resumed = snd_train([scene], SPEC, cfg, part, progress=False, resume=True,
                        evaluate=False)
    assert not checkpoint_path(part).exists()
    a, b = load_file(str(tmp_path / "full.st")), load_file(str(part))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["loss_first"] == full["loss_first"]
    assert resumed["loss_last"] == full["loss_last"]
    snd_train([scene], SPEC, cfg, part, progress=False, stop_at=2, evaluate=False)
    with pytest.raises(ValueError, match="differs"):  # another run's checkpoint
        snd_train([scene], SPEC, SnDConfig.tiny(**{**SMALL, "lr": 1e-2}, loss=loss), part,
                  progress=False, resume=True, evaluate=False)


def test_given_masks_are_read(scene, tmp_path):
    folder = tmp_path / "masks"
    folder.mkdir()
    for v in scene.views[:-1]:
        lab = np.zeros((48, 64), np.uint8)
        lab[:, 32:] = 7
        Image.fromarray(lab).save(folder / f"{v.index:06d}.png")
    cfg = SnDConfig.tiny(**{**SMALL, "steps": 1})
    with pytest.raises(FileNotFoundError, match=f"{scene.views[-1].index:06d}.png"):
        snd_train([scene], SPEC, cfg, tmp_path / "m.st", masks=folder, progress=False)
    Image.fromarray(np.zeros((48, 64), np.uint8)).save(
        folder / f"{scene.views[-1].index:06d}.png")
    r = snd_train([scene], SPEC, cfg, tmp_path / "m.st", masks=folder, progress=False,
                  evaluate=False)
    assert r["steps"] == 1


def test_bad_input_stops_with_a_clear_error(scene, shared_data, tmp_path):
    cfg = SnDConfig.tiny(**SMALL)
    for v in scene.views:
        v.depth = np.full_like(v.depth, np.nan)
    try:
        with pytest.raises(ValueError, match="no valid depth"):
            snd_train([scene], SPEC, cfg, tmp_path / "a.st", progress=False)
    finally:  # the module's scene fixture: reload it for the next tests
        fresh = load_scene(shared_data / "rgbd" / "7scenes", frames="0:40:4", holdout_every=5)
        for v, f in zip(scene.views, fresh.views):
            v.depth = f.depth
    far = SnDConfig.tiny(**SMALL, min_baseline=5.0, max_baseline=6.0)
    with pytest.raises(ValueError, match="no overlapping context pairs"):
        snd_train([scene], SPEC, far, tmp_path / "b.st", progress=False)
    two = load_scene(shared_data / "rgbd" / "7scenes", frames="0:20:10", holdout_every=0)
    with pytest.raises(ValueError, match="at least 3"):
        snd_train([two], SPEC, cfg, tmp_path / "c.st", progress=False)
    with pytest.raises(ValueError, match="at least 2"):
        load_scene(shared_data / "rgbd" / "7scenes", frames="0:1")


def test_snd_command_json(shared_data, tmp_path, capsys):
    seven = str(shared_data / "rgbd" / "7scenes")
    args = ["--backbone", "vit_tiny_test", "--random-init", "--config", "tiny", "--threads",
            "1", "--no-progress", "--width", "32", "--prototypes", "64"]
    out = tmp_path / "s.safetensors"
    rc = main(["snd", seven, "--frames", "0:100:5", "--holdout-every", "2", *args,
               "--steps", "3", "-o", str(out), "--json"])
    r = json.loads(capsys.readouterr().out)
    assert rc == 0 and out.is_file()
    assert {"steps", "seconds", "loss_first", "loss_last", "recall@10px", "teacher"} <= set(r)
    assert r["steps"] == 3 and set(r["recall@10px"]) == {"teacher", "rendered"}
    assert r["recall_pairs"] >= 1 and all(0 <= v <= 1 for v in r["recall@10px"].values())
    assert r["teacher"]["ema_momentum"] == 0.999 and not r["teacher"]["frozen"]
    # the student is accepted by the evaluations' --finetuned
    assert main(["eval-correspondence", seven, "--frames", "0:100:10", "--holdout-every", "2",
                 "--pairs", "2", "--backbone", "vit_tiny_test", "--random-init", "--config",
                 "tiny", "--finetuned", str(out), "--json"]) == 0
    assert "finetuned" in json.loads(capsys.readouterr().out)["recall@10px"]
    assert main(["snd", seven, "--frames", "0:1", *args, "-o", str(tmp_path / "x.st")]) == 2
    assert "at least 2" in capsys.readouterr().err
    assert main(["snd", seven, *args, "-o", str(out)]) == 2  # exists without --force


@pytest.mark.parametrize("frozen", [False, True])
def test_teacher_follows_the_student_unless_frozen(scene, tmp_path, frozen):
    cfg = SnDConfig.tiny(**{**SMALL, "frozen_teacher": frozen, "ema_every": 1})
    out = tmp_path / "t.st"
    snd_train([scene], SPEC, cfg, out, progress=False, stop_at=3, evaluate=False)
    teacher = torch.load(checkpoint_path(out), weights_only=True)["teacher"]
    orig = build_backbone("vit_tiny_test", pretrained=False).model.state_dict()
    moved = {k for k, v in teacher.items() if not torch.equal(v, orig[k])}
    if frozen:
        assert not moved
    else:
        assert moved == {f"blocks.{i}.attn.{n}.weight" for i in range(2)
                         for n in ("qkv", "proj")}
