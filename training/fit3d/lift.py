"""Stage I of FiT3D: lift a frozen ViT's features into a feature-Gaussian scene.

Design note: per iteration one training view is drawn (`training.loop.step_rng(seed, step)`,
so a resumed run draws the same views), G renders colour and F_low in one rasterizer
call with gradient separation, and the loss is ``L_c(r_rgb, I) + L1(d(F_low), F)``
where F is the teacher's patch map bilinearly upsampled to the render size. L_c
(0.8·L1 + 0.2·(1−SSIM)) moves geometry and colour; L_f moves only f and the decoder d
(the rasterizer detaches the blending weights for the feature channels). Density control
(`densify`) follows 3DGS's schedule. A checkpoint (``OUTPUT.ckpt``: Gaussians, decoder,
Adam state, densification statistics, step) is written every `save_every` iterations;
``resume`` continues from it and, with a deterministic rasterizer (the torch backend, or
the CPU kernel on one thread: its backward sums tile contributions in thread order),
reproduces the uninterrupted run exactly. Held-out views give PSNR and feature L1.
Per iteration nothing waits for the device: the views' cameras are validated once and
the Gaussians at the run's first render (their activations keep them valid; the losses,
kept on the device, are read and checked for finiteness every `LOG_EVERY` iterations);
on CUDA the upsampled teacher targets are cached on the device in fp16 (up to
`TARGET_CACHE_MB`), elsewhere recomputed per iteration (float32, as before).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fit3d_ros.kernels import RasterOutput, check_camera
from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.models.checkpoint import atomic_save
from fit3d_ros.training.fit3d.config import LiftConfig
from fit3d_ros.training.fit3d.densify import (
    DensifyStats,
    build_optimizer,
    densify_and_prune,
    position_lr,
    reset_opacity,
)
from fit3d_ros.training.fit3d.gaussians import GaussianModel
from fit3d_ros.training.fit3d.scene_file import (
    FeatureScene,
    make_decoder,
    save_scene_file,
)
from fit3d_ros.training.fit3d.scenes import (
    Scene,
    SceneView,
    colored_points,
    render_size,
    resize_rgb,
)
from fit3d_ros.training.fit3d.ssim import color_loss, psnr
from fit3d_ros.training.fit3d.vit_features import (
    build_spec_backbone,
    extract,
    spec_dict,
)
from fit3d_ros.training.loop import run_steps, step_rng
from fit3d_ros.training.resume import load_run_checkpoint, resume_checkpoint

CKPT_FORMAT = "fit3d_ros.lift-checkpoint/1"
LOG_EVERY = 50            # iterations between loss reads (each one a device sync)
TARGET_CACHE_MB = 8192    # device memory for cached fp16 teacher targets (CUDA)


@dataclass
class Views:
    """Views at the render size: images, world->camera matrices, intrinsics, teacher F."""

    u8: torch.Tensor        # (V,H,W,3) uint8
    images: torch.Tensor    # (V,H,W,3) float in [0,1]
    viewmats: torch.Tensor  # (V,4,4)
    Ks: torch.Tensor        # (V,3,3)
    teacher: list[torch.Tensor]  # V × (C,h,w) patch maps
    cached: list[torch.Tensor | None] | None = None  # V × (1,C,H,W) fp16 targets, if caching

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[1])

    def to(self, device: str | torch.device) -> "Views":
        return Views(self.u8.to(device), self.images.to(device), self.viewmats.to(device),
                     self.Ks.to(device), [t.to(device) for t in self.teacher],
                     None if self.cached is None else [None] * len(self.cached))

    def cache_targets(self, budget_mb: float = TARGET_CACHE_MB) -> None:
        """Keep the upsampled targets of the first views that fit `budget_mb` in fp16
        (filled on first use; `target` returns them from then on)."""
        w, h = self.size
        chans = max((int(t.shape[0]) for t in self.teacher), default=1)
        per_mb = chans * w * h * 2 / 2 ** 20  # one fp16 (C, H, W) target
        self.cached = [None] * min(len(self.teacher), int(budget_mb // per_mb))

    def target(self, v: int) -> torch.Tensor:
        """Teacher features bilinearly upsampled to the render size (1,C,H,W): float32,
        or the fp16 cache (see `cache_targets`)."""
        if self.cached is not None and v < len(self.cached):
            if self.cached[v] is None:
                self.cached[v] = self._upsample(v).half()
            return self.cached[v]
        return self._upsample(v)

    def _upsample(self, v: int) -> torch.Tensor:
        w, h = self.size
        return F.interpolate(self.teacher[v][None].float(), size=(h, w), mode="bilinear",
                             align_corners=False)


def prepare_views(views: list[SceneView], width: int | None, teacher: torch.nn.Module,
                  token_budget: int | None) -> Views:
    """Resize images, scale intrinsics and run the frozen teacher once per view."""
    if not views:
        return Views(torch.zeros(0, 1, 1, 3, dtype=torch.uint8), torch.zeros(0, 1, 1, 3),
                     torch.zeros(0, 4, 4), torch.zeros(0, 3, 3), [])
    w, h = render_size(views[0].color_camera, width)
    imgs = torch.stack([resize_rgb(v.rgb, w, h) for v in views])
    u8 = (imgs * 255.0).round().to(torch.uint8)
    Ks = torch.stack([torch.from_numpy(v.color_camera.scaled(w, h).K) for v in views]).float()
    vms = torch.stack([torch.from_numpy(v.viewmat) for v in views]).float()
    feats, _ = extract(teacher, u8, token_budget)
    return Views(u8, u8.float() / 255.0, vms, Ks, [f.half() for f in feats])


def scene_extent(viewmats: torch.Tensor) -> float:
    """3DGS's normalisation radius: 1.1 × the largest camera distance from their mean."""
    centres = -(viewmats[:, :3, :3].transpose(1, 2) @ viewmats[:, :3, 3:])[:, :, 0]
    return 1.1 * float((centres - centres.mean(0)).norm(dim=1).max().clamp_min(0.1))


def init_gaussians(views: list[SceneView], cfg: LiftConfig) -> GaussianModel:
    """Gaussians from the back-projected depth of the training views (no COLMAP)."""
    pts = [colored_points(v, cfg.depth_stride) for v in views]
    xyz = np.concatenate([p[0] for p in pts])
    rgb = np.concatenate([p[1] for p in pts])
    if len(xyz) < 4:
        raise ValueError(f"only {len(xyz)} valid depth points in the training views")
    return GaussianModel.from_points(xyz, rgb, cfg.feature_dim, cfg.sh_degree,
                                     cfg.voxel_size, cfg.max_init_points, cfg.seed)


@torch.no_grad()
def evaluate_views(model: GaussianModel, decoder: torch.nn.Module, views: Views,
                   backend: str = "auto") -> dict[str, float | None]:
    """Mean PSNR (colour) and feature L1 (vs the teacher) over `views`."""
    if views.images.shape[0] == 0:
        return {"psnr": None, "feature_l1": None}
    w, h = views.size
    ps, fl = [], []
    for v in range(views.images.shape[0]):
        out = model.render(views.viewmats[v], views.Ks[v], w, h, backend=backend)
        ps.append(psnr(out.rgb, views.images[v]))
        f_high = decoder(out.features.permute(2, 0, 1)[None])
        fl.append(float((f_high - views.target(v)).abs().mean()))
    return {"psnr": float(np.mean(ps)), "feature_l1": float(np.mean(fl))}


def _scene_id(scene: Scene) -> dict[str, Any]:
    return {"source": scene.source, "format": scene.fmt,
            "frames": [v.index for v in scene.views], "train": list(scene.train)}


def _run_id(cfg: LiftConfig, spec: BackboneSpec, scene: Scene) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed."""
    return {"config": cfg.to_dict(), "backbone": spec.to_dict(), "scene": _scene_id(scene)}


class LiftRun:
    """Mutable state of one lifting run (model, decoder, optimizer, statistics)."""

    def __init__(self, model: GaussianModel, decoder: torch.nn.Module, cfg: LiftConfig,
                 extent: float, device: str | torch.device = "cpu") -> None:
        model.to(device)
        decoder.to(device)
        self.model, self.decoder, self.cfg, self.extent = model, decoder, cfg, extent
        self.opt = build_optimizer(model, decoder, cfg, extent)
        self.stats = DensifyStats.zeros(len(model), device)
        self._history: list[torch.Tensor] = []  # (2,) detached (L_c, L_f) per iteration
        self.validated = False  # the Gaussians passed rasterize_gaussians' checks once

    @property
    def history(self) -> list[tuple[float, float]]:
        """(L_c, L_f) per iteration of this run (one device read)."""
        if not self._history:
            return []
        return [tuple(x) for x in torch.stack(self._history).tolist()]

    def losses(self, step: int, data: Views, backend: str
               ) -> tuple[torch.Tensor, torch.Tensor, RasterOutput]:
        """(L_c, L_f, render) of iteration `step` (its view drawn from the step's rng)."""
        cfg = self.cfg
        v = int(step_rng(cfg.seed, step).integers(data.images.shape[0]))
        w, h = data.size
        out = self.model.render(data.viewmats[v], data.Ks[v], w, h,
                                sh_degree=step // max(cfg.sh_increase_every, 1),
                                backend=backend, validate=not self.validated)
        self.validated = True
        out.means2d.retain_grad()
        lc = color_loss(out.rgb, data.images[v], cfg.lambda_dssim)
        f_high = self.decoder(out.features.permute(2, 0, 1)[None])
        lf = (f_high - data.target(v)).abs().mean()
        return lc, lf, out

    def step(self, step: int, data: Views, backend: str) -> torch.Tensor:
        """One iteration; its loss L_c + L_f as a device scalar (not read here)."""
        cfg, model = self.cfg, self.model
        for g in self.opt.param_groups:
            if g["name"] == "means":
                g["lr"] = position_lr(step, cfg, self.extent)
        w, h = data.size
        lc, lf, out = self.losses(step, data, backend)
        self.opt.zero_grad(set_to_none=True)
        (lc + lf).backward()
        self.opt.step()
        done = step + 1
        if done < cfg.densify_until:
            if out.means2d.grad is not None:
                self.stats.update(out.means2d.grad, out.radii, w, h)
            if done > cfg.densify_from and done % cfg.densify_every == 0:
                gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + done)
                self.stats = densify_and_prune(model, self.opt, self.stats, cfg, self.extent,
                                               done, gen)
            if cfg.opacity_reset_every and done % cfg.opacity_reset_every == 0:
                reset_opacity(model, self.opt)
        pair = torch.stack([lc.detach(), lf.detach()])
        self._history.append(pair)
        return pair.sum()

    def payload(self, step: int, spec: BackboneSpec, scene: Scene) -> dict[str, Any]:
        return {"format": CKPT_FORMAT, "step": step, "gaussians": self.model.state(),
                "sh_degree": self.model.sh_degree,
                "decoder": {k: v.detach().clone() for k, v in self.decoder.state_dict().items()},
                "optimizer": self.opt.state_dict(), "stats": self.stats.as_dict(),
                **_run_id(self.cfg, spec, scene), "extent": self.extent}

    @classmethod
    def restore(cls, d: dict[str, Any], cfg: LiftConfig, device: str | torch.device = "cpu"
                ) -> "LiftRun":
        model = GaussianModel.from_state(d["gaussians"], int(d["sh_degree"]))
        w = d["decoder"]["weight"]
        decoder = make_decoder(w.shape[1], w.shape[0])
        decoder.load_state_dict(d["decoder"])
        run = cls(model, decoder, cfg, float(d["extent"]), device)
        run.opt.load_state_dict(d["optimizer"])
        run.stats = DensifyStats(**{k: v.to(device).clone() for k, v in d["stats"].items()})
        return run


def lift_scene(scene: Scene, spec: BackboneSpec, cfg: LiftConfig, output: str | Path, *,
               resume: bool = False, progress: bool = True, backend: str = "auto",
               stop_at: int | None = None, device: str | torch.device = "cpu"
               ) -> dict[str, Any]:
    """Run Stage I on `scene` and write the feature scene to `output` (see module note).

    `stop_at` ends the run after that many iterations, leaving only the checkpoint (an
    interruption, for tests and time-sliced jobs). Returns the result dictionary.
    """
    t0 = time.perf_counter()
    ckpt = resume_checkpoint(output, resume)
    teacher = build_spec_backbone(spec, device)
    train = prepare_views(scene.subset("train"), cfg.image_width, teacher, cfg.token_budget
                          ).to(device)
    for v in range(train.viewmats.shape[0]):  # once: renders skip the checks (note)
        check_camera(train.viewmats[v], train.Ks[v])
    if torch.device(device).type == "cuda":
        train.cache_targets()
    if resume:
        d = load_run_checkpoint(ckpt, CKPT_FORMAT, "lift", _run_id(cfg, spec, scene))
        run, start = LiftRun.restore(d, cfg, device), int(d["step"])
    else:
        model = init_gaussians(scene.subset("train"), cfg)
        decoder = make_decoder(cfg.feature_dim, int(train.teacher[0].shape[0]))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            decoder.reset_parameters()
        run, start = LiftRun(model, decoder, cfg, scene_extent(train.viewmats), device), 0
    end = cfg.iterations if stop_at is None else min(stop_at, cfg.iterations)

    def save(done: int) -> None:
        if done < cfg.iterations:  # the finished run writes the scene file instead
            atomic_save(run.payload(done, spec, scene), ckpt)

    run_steps(start, end, lambda s: run.step(s, train, backend), save, cfg.save_every,
              progress, f"lift {Path(scene.source).name}", log_every=LOG_EVERY)
    result: dict[str, Any] = {"iterations": end, "num_gaussians": len(run.model),
                              "backbone": spec_dict(spec), "data": _scene_id(scene),
                              "config": cfg.to_dict()}
    if run.history:
        k = max(1, min(20, len(run.history) // 5))
        result["loss_first"] = float(np.mean([sum(x) for x in run.history[:k]]))
        result["loss_last"] = float(np.mean([sum(x) for x in run.history[-k:]]))
    if end < cfg.iterations:
        result.update(stopped=True, checkpoint=str(ckpt), seconds=time.perf_counter() - t0)
        return result
    # the held-out views are only needed now: a stopped slice never runs the teacher on them
    held = prepare_views(scene.subset("heldout"), cfg.image_width, teacher, cfg.token_budget
                         ).to(device)
    ev = evaluate_views(run.model, run.decoder, held, backend)
    tr = evaluate_views(run.model, run.decoder, train, backend)
    w, h = train.size
    order = list(scene.train) + list(scene.heldout)
    allv = [a for a in (train, held) if a.images.shape[0]]  # no held-out views: none
    images = torch.cat([a.u8 for a in allv]).cpu()
    fs = FeatureScene(run.model.cpu(), run.decoder.cpu(), images,
                      torch.cat([a.viewmats for a in allv]).cpu(),
                      torch.cat([a.Ks for a in allv]).cpu(),
                      torch.tensor([True] * len(scene.train) + [False] * len(scene.heldout)),
                      spec.to_dict(),
                      {"source": scene.source, "format": scene.fmt,
                       "frames": [scene.views[i].index for i in order],
                       "config": cfg.to_dict(), "teacher": spec.teacher,
                       "width": w, "height": h})
    result.update(psnr_heldout=ev["psnr"], feature_l1_heldout=ev["feature_l1"],
                  psnr_train=tr["psnr"], feature_l1_train=tr["feature_l1"],
                  heldout_views=len(scene.heldout), train_views=len(scene.train))
    result["seconds"] = time.perf_counter() - t0
    fs.meta["metrics"] = {k: v for k, v in result.items() if isinstance(v, (int, float))}
    save_scene_file(output, fs)
    ckpt.unlink(missing_ok=True)
    result["output"] = str(output)
    return result
