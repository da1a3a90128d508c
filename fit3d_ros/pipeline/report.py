"""report.html for a replay: one self-contained page people read.

Design note: everything is inlined — figures are PNGs in base64 ``data:`` URIs and the
style sits in the page — so the file alone survives being copied or mailed. Figures are
drawn with numpy + Pillow (no plotting stack); numbers are HTML tables: run summary,
per-class IoU (with ground-truth / predicted point counts), the confusion matrix (rows
ground truth, columns prediction) with counts in every cell, each cell shaded by its
row-normalised share on the white→blue scale printed beside it, and per-stage latency.
Each camera's PCA feature preview (the token grid; the ViT input is the whole image
resized, so the grid covers the image exactly) is shown next to its camera image and
blended over it. Labelled clouds are rasterised top-down (x forward up, y left) over the
cloud's whole xy bounding box at its aspect ratio (no point falls outside), the highest
point winning each pixel. ``confusion.json`` / ``confusion.png`` are still written beside
it for tools (`pipeline.metrics.write_confusion`).
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from fit3d_ros.sensors import PointCloud

from .metrics import iou_per_class, write_confusion

SUMMARY_KEYS = ("bag", "weights", "checkpoint", "frames_in", "frames_out", "drops", "miou",
                "accuracy", "wall_s", "io_share")
STYLE = """body{font-family:sans-serif;margin:2em;color:#222}
td,th{padding:2px 8px;text-align:left}table{border-collapse:collapse;margin:.5em 0}
table.grid td,table.grid th{border:1px solid #ccc;text-align:right}
table.grid th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{display:inline-block;margin:.6em;vertical-align:top}
img{max-width:520px;border:1px solid #ccc}
.preview{display:flex}.preview figure{flex:1;max-width:32%}.preview img{width:100%}
th.v{writing-mode:vertical-rl;transform:rotate(180deg);text-align:left}
div.wide{overflow-x:auto}
.scale{display:inline-block;width:220px;height:14px;border:1px solid #999;
background:linear-gradient(to right,rgb(255,255,255),rgb(0,0,255))}
.swatch{display:inline-block;width:1em;height:1em;border:1px solid #999;vertical-align:middle}"""


def png_data_uri(img: np.ndarray, upscale: int = 1) -> str:
    """A ``data:image/png;base64,…`` URI of an rgb8 (H, W, 3) image (nearest upscaling)."""
    im = Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8))
    if upscale > 1:
        im = im.resize((im.width * upscale, im.height * upscale), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def bev_image(cloud: PointCloud, colors: np.ndarray, size: int = 600,
              extent_m: float | None = None) -> np.ndarray:
    """Top-down rgb8 image of a cloud, coloured per point, fitted to its xy extent.

    The longer side of the bounding box spans `size` pixels (the other side keeps the
    aspect ratio); `extent_m` instead fixes a square window of that width around the
    box's centre. Returns (H, W, 3): rows run along -x (forward up), columns along -y.
    """
    xyz = np.asarray(cloud.xyz, dtype=np.float64)
    if len(xyz) == 0:
        return np.full((size, size, 3), 255, np.uint8)
    lo, hi = xyz[:, :2].min(axis=0), xyz[:, :2].max(axis=0)
    centre = (lo + hi) / 2
    span = np.full(2, extent_m) if extent_m else np.maximum(hi - lo, 1e-3)
    scale = (size - 3) / span.max()                   # 1 px border for the 3x3 dots
    rows, cols = (np.ceil(span * scale).astype(int) + 3).tolist()  # x → rows, y → cols
    img = np.full((rows, cols, 3), 255, np.uint8)
    row = np.round((rows - 1) / 2 - (xyz[:, 0] - centre[0]) * scale).astype(np.int64)
    col = np.round((cols - 1) / 2 - (xyz[:, 1] - centre[1]) * scale).astype(np.int64)
    ok = (col >= 0) & (col < cols) & (row >= 0) & (row < rows)
    order = np.argsort(xyz[ok, 2], kind="stable")     # low first, the highest wins
    r, c, rgb = row[ok][order], col[ok][order], np.asarray(colors)[ok][order]
    for dr in (-1, 0, 1):  # 3x3 dots so sparse scans stay visible
        for dc in (-1, 0, 1):
            img[np.clip(r + dr, 0, rows - 1), np.clip(c + dc, 0, cols - 1)] = rgb
    return img


def blend_preview(rgb: np.ndarray, preview: np.ndarray, alpha: float = 0.5
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(preview upsampled to the camera image, alpha blend of it over the image)."""
    h, w = rgb.shape[:2]
    up = np.asarray(Image.fromarray(preview).resize((w, h), Image.BILINEAR))
    mix = (1 - alpha) * rgb.astype(np.float32) + alpha * up.astype(np.float32)
    return up, np.clip(np.round(mix), 0, 255).astype(np.uint8)


def shade(frac: float) -> tuple[int, int, int]:
    """The colour scale: share 0 → white, 1 → blue (as ``confusion.png``)."""
    v = int(round(255 * (1.0 - min(max(frac, 0.0), 1.0))))
    return v, v, 255


def iou_table(names: Sequence[str], conf: np.ndarray) -> str:
    """Per-class IoU with the ground-truth and predicted point counts of each class."""
    conf = np.asarray(conf, dtype=np.int64)
    iou = iou_per_class(conf)
    rows = "".join(
        f"<tr><th>{html.escape(n)}</th><td class='num'>"
        f"{'–' if np.isnan(v) else f'{v:.3f}'}</td><td class='num'>{gt}</td>"
        f"<td class='num'>{pr}</td></tr>"
        for n, v, gt, pr in zip(names, iou, conf.sum(axis=1), conf.sum(axis=0)))
    return ("<table class='grid' id='iou'><tr><th>class</th><th>IoU</th>"
            f"<th>ground-truth points</th><th>predicted points</th></tr>{rows}</table>")


def confusion_table(names: Sequence[str], conf: np.ndarray) -> str:
    """Counts with row/column labels, cells shaded by their row-normalised share."""
    conf = np.asarray(conf, dtype=np.int64)
    total = conf.sum(axis=1)
    head = "".join(f"<th class='v'>{html.escape(n)}</th>" for n in names)
    body = []
    for name, row, n in zip(names, conf, total):
        cells = []
        for count in row:
            frac = count / n if n else 0.0
            fg = "#fff" if frac > 0.55 else "#000"
            cells.append(f"<td style='background:rgb{shade(frac)};color:{fg}' "
                         f"title='{frac:.1%} of the row'>{count}</td>")
        body.append(f"<tr><th>{html.escape(name)}</th>{''.join(cells)}</tr>")
    scale = ("<p>cell colour: share of the row (ground-truth class) &nbsp; 0% "
             "<span class='scale'></span> 100%</p>")
    return (f"<div class='wide'><table class='grid' id='confusion'><tr><th rowspan='2'>"
            f"ground truth ↓</th><th colspan='{len(names)}'>prediction →</th></tr>"
            f"<tr>{head}</tr>{''.join(body)}</table></div>{scale}")


def _figure(uri: str, caption: str, alt: str) -> str:
    return (f"<figure><img src='{uri}' alt='{html.escape(alt)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _summary(metrics: dict[str, Any]) -> str:
    rows = []
    for key in SUMMARY_KEYS:
        if key in metrics:
            v = metrics[key]
            v = f"{v:.4g}" if isinstance(v, float) else v
            rows.append(f"<tr><th>{html.escape(key)}</th><td>{html.escape(str(v))}</td></tr>")
    return f"<table id='summary'>{''.join(rows)}</table>"


def _latency(metrics: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td class='num'>{v['p50']:.2f}</td>"
                   f"<td class='num'>{v['p90']:.2f}</td><td class='num'>{v['p99']:.2f}</td>"
                   f"<td class='num'>{v['count']}</td></tr>"
                   for k, v in metrics.get("latency_ms", {}).items())
    return ("<table class='grid' id='latency'><tr><th>stage</th><th>p50</th><th>p90</th>"
            f"<th>p99</th><th>n</th></tr>{rows}</table>")


def _previews(previews: dict[str, list[tuple[np.ndarray, np.ndarray]]],
              max_width: int = 640) -> str:
    parts = []
    for topic, shots in previews.items():
        for tag, (rgb, preview) in zip(("first", "last"), shots):
            if rgb.shape[1] > max_width:  # keeps the page small (KITTI: 1242 px wide)
                h = max(1, round(rgb.shape[0] * max_width / rgb.shape[1]))
                rgb = np.asarray(Image.fromarray(rgb).resize((max_width, h), Image.BILINEAR))
            up, mix = blend_preview(rgb, preview)
            what = f"{topic} ({tag} frame, {preview.shape[1]}×{preview.shape[0]} tokens)"
            parts.append("<div class='preview'>"
                         + _figure(png_data_uri(rgb), f"camera image, {what}", "camera")
                         + _figure(png_data_uri(up), "PCA of the 2D features", "pca")
                         + _figure(png_data_uri(mix), "PCA blended over the image (50%)",
                                   "blend") + "</div>")
    return "".join(parts)


def write_report(out: Path, metrics: dict[str, Any],
                 previews: dict[str, list[tuple[np.ndarray, np.ndarray]]],
                 bev: list[tuple[PointCloud, np.ndarray]], segmenter: Any,
                 evaluator: Any) -> Path:
    """Write the self-contained report.html into `out` (previews: topic → [(camera rgb,
    PCA preview)] of the first and last frame); returns its path."""
    sections = [_summary(metrics)]
    if evaluator is not None:
        write_confusion(evaluator.total, evaluator.class_names, out)
        sections += ["<h2>Per-class IoU</h2>", iou_table(evaluator.class_names, evaluator.total),
                     "<h2>Confusion matrix (point counts)</h2>",
                     confusion_table(evaluator.class_names, evaluator.total)]
    sections += ["<h2>Latency (ms)</h2>", _latency(metrics)]
    if previews:
        sections += ["<h2>2D features</h2>", _previews(previews)]
    if segmenter is not None and bev:
        legend = " &nbsp; ".join(
            f"<span class='swatch' style='background:rgb{tuple(int(c) for c in col)}'>"
            f"</span> {html.escape(n)}" for n, col in zip(segmenter.class_names,
                                                         segmenter.palette))
        figs = []
        for tag, (cloud, _labels) in zip(("first", "last"), bev):
            colors = cloud.rgb if cloud.rgb is not None else np.zeros((len(cloud), 3), np.uint8)
            xy = np.asarray(cloud.xyz)[:, :2]
            size = (f"{np.ptp(xy[:, 0]):.1f} m × {np.ptp(xy[:, 1]):.1f} m" if len(xy)
                    else "empty")
            figs.append(_figure(png_data_uri(bev_image(cloud, colors)),
                                f"Labelled cloud from above ({tag} frame, {len(cloud)} "
                                f"points, x forward up, {size})", f"bev {tag}"))
        sections += ["<h2>Labelled clouds from above</h2>", f"<p>{legend}</p>", *figs]
    warn = ("<p style='color:#b00'><b>Random weights:</b> no pretrained backbone was used; "
            "features and labels show the pipeline, not a trained model.</p>"
            if "RANDOM" in str(metrics.get("weights", "")) else "")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>fit3d_ros replay"
            f"</title><style>{STYLE}</style></head><body><h1>fit3d_ros replay report</h1>"
            f"{warn}{''.join(sections)}<h2>All metrics</h2>"
            f"<pre>{html.escape(json.dumps(metrics, indent=1)[:20000])}</pre></body></html>")
    path = Path(out) / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
