"""report.html for a replay: metrics table and PNG figures (PCA features, clouds from above).

Design note: figures are drawn with numpy + Pillow (no plotting stack): feature
previews are upscaled PCA images; labelled clouds are rasterised top-down (x forward up,
y left) with the class palette, nearest-to-sky point winning per pixel; the confusion
matrix comes from `pipeline.metrics.write_confusion`.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fit3d_ros.sensors import PointCloud

from .metrics import write_confusion


def bev_image(cloud: PointCloud, colors: np.ndarray, size: int = 600,
              extent_m: float | None = None) -> np.ndarray:
    """Top-down rgb8 image (size, size, 3) of a cloud, coloured per point."""
    xyz = cloud.xyz
    img = np.full((size, size, 3), 255, np.uint8)
    if len(xyz) == 0:
        return img
    centre = np.median(xyz[:, :2], axis=0)
    half = extent_m / 2 if extent_m else float(np.percentile(np.abs(xyz[:, :2] - centre), 98)) + 1e-3
    scale = (size / 2 - 1) / half
    col = np.round(size / 2 - (xyz[:, 1] - centre[1]) * scale).astype(np.int64)  # y left
    row = np.round(size / 2 - (xyz[:, 0] - centre[0]) * scale).astype(np.int64)  # x up
    ok = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    order = np.argsort(xyz[ok, 2])  # draw low first, high last (highest wins)
    r, c, rgb = row[ok][order], col[ok][order], colors[ok][order]
    for dr in (-1, 0, 1):  # 3x3 dots so sparse scans stay visible
        for dc in (-1, 0, 1):
            img[np.clip(r + dr, 0, size - 1), np.clip(c + dc, 0, size - 1)] = rgb
    return img


def _save(img: np.ndarray, path: Path, upscale: int = 1) -> str:
    im = Image.fromarray(img)
    if upscale > 1:
        im = im.resize((im.width * upscale, im.height * upscale), Image.NEAREST)
    im.save(path)
    return path.name


def write_report(out: Path, metrics: dict[str, Any], previews: dict[str, list[np.ndarray]],
                 bev: list[tuple[PointCloud, np.ndarray]], segmenter: Any,
                 evaluator: Any) -> Path:
    """Write PNG figures and report.html into `out`; returns the HTML path."""
    figs: list[tuple[str, str]] = []
    for topic, shots in previews.items():
        for tag, img in zip(("first", "last"), shots):
            name = f"features_{topic.strip('/').replace('/', '_')}_{tag}.png"
            up = max(1, 320 // max(img.shape[:2]))
            figs.append((f"PCA of the 2D features, {topic} ({tag} frame)",
                         _save(img, out / name, up)))
    if segmenter is not None:
        for tag, (cloud, labels) in zip(("first", "last"), bev):
            colors = cloud.rgb if cloud.rgb is not None else np.zeros((len(cloud), 3), np.uint8)
            figs.append((f"Labelled cloud from above ({tag} frame, {len(cloud)} points)",
                         _save(bev_image(cloud, colors), out / f"bev_{tag}.png")))
    if evaluator is not None:
        _, png = write_confusion(evaluator.total, evaluator.class_names, out)
        figs.append(("Confusion matrix (rows: ground truth, row-normalised)", png.name))
    rows = []
    for key in ("bag", "weights", "checkpoint", "frames_in", "frames_out", "drops", "miou",
                "accuracy", "wall_s", "io_share"):
        if key in metrics:
            v = metrics[key]
            v = f"{v:.4g}" if isinstance(v, float) else v
            rows.append(f"<tr><th>{html.escape(key)}</th><td>{html.escape(str(v))}</td></tr>")
    lat = "".join(f"<tr><td>{html.escape(k)}</td><td>{v['p50']:.2f}</td><td>{v['p90']:.2f}"
                  f"</td><td>{v['p99']:.2f}</td><td>{v['count']}</td></tr>"
                  for k, v in metrics.get("latency_ms", {}).items())
    legend = ""
    if segmenter is not None:
        legend = "".join(
            f"<span style='background:rgb{tuple(int(c) for c in col)};padding:0 .6em'>"
            f"&nbsp;</span> {html.escape(n)} &nbsp; "
            for n, col in zip(segmenter.class_names, segmenter.palette))
    warn = ("<p style='color:#b00'><b>Random weights:</b> no pretrained backbone was used; "
            "features and labels show the pipeline, not a trained model.</p>"
            if "RANDOM" in str(metrics.get("weights", "")) else "")
    body = "".join(f"<figure><img src='{f}'><figcaption>{html.escape(c)}</figcaption></figure>"
                   for c, f in figs)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>fit3d_ros replay</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px;text-align:left}}
figure{{display:inline-block;margin:1em}}img{{max-width:640px;border:1px solid #ccc}}</style>
</head><body><h1>fit3d_ros replay report</h1>{warn}
<table>{''.join(rows)}</table><h2>Latency (ms)</h2>
<table><tr><th>stage</th><th>p50</th><th>p90</th><th>p99</th><th>n</th></tr>{lat}</table>
<h2>Figures</h2><p>{legend}</p>{body}
<h2>All metrics</h2><pre>{html.escape(json.dumps(metrics, indent=1)[:20000])}</pre>
</body></html>"""
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
