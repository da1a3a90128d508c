"""report.html for a map: top view coloured by class with instance boxes, instance table.

Design note: drawn with numpy + Pillow like the replay report: voxels are rasterised from
above (x right, y up, highest voxel wins per pixel) in their class colour, and every
instance of every class is outlined by its axis-aligned box in the class colour, except
instances whose footprint covers over a quarter of the map's (floors, walls: structure,
not objects).
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .instances import Instance, locate
from .voxel_map import VoxelMap


def top_view(vmap: VoxelMap, instances: list[Instance], size: int = 640) -> Image.Image:
    """The map from above with instance boxes (rgb image of `size` px on its long side)."""
    cloud = vmap.cloud()
    img = Image.new("RGB", (size, size), "white")
    if len(cloud) == 0:
        return img
    lo, hi = cloud.xyz[:, :2].min(0), cloud.xyz[:, :2].max(0)
    scale = (size - 20) / max(float((hi - lo).max()), 1e-3)
    to_px = lambda x, y: (10 + (x - lo[0]) * scale, size - 10 - (y - lo[1]) * scale)  # noqa: E731
    order = np.argsort(cloud.xyz[:, 2])
    px = np.stack(to_px(cloud.xyz[order, 0], cloud.xyz[order, 1]), 1).round().astype(int)
    px = np.clip(px, 0, size - 1)
    arr = np.asarray(img).copy()
    dot = max(1, int(round(vmap.cfg.voxel_size * scale / 2)))
    for dx in range(-dot + 1, dot):
        for dy in range(-dot + 1, dot):
            arr[np.clip(px[:, 1] + dy, 0, size - 1), np.clip(px[:, 0] + dx, 0, size - 1)] = \
                cloud.rgb[order]
    img = Image.fromarray(arr)
    draw = ImageDraw.Draw(img)
    for inst in instances:
        col = tuple(int(c) for c in vmap.palette[vmap.class_index(inst.class_name)])
        x0, y1 = to_px(inst.box_min[0], inst.box_min[1])
        x1, y0 = to_px(inst.box_max[0], inst.box_max[1])
        draw.rectangle([x0 - 2, y0 - 2, x1 + 2, y1 + 2], outline=(0, 0, 0), width=3)
        draw.rectangle([x0 - 2, y0 - 2, x1 + 2, y1 + 2], outline=col, width=1)
        draw.text((x0, y0 - 12), inst.class_name, fill=(0, 0, 0))
    return img


def object_instances(vmap: VoxelMap, min_points: int = 5, max_share: float = 0.25
                     ) -> list[Instance]:
    """Instances of every class whose box footprint is at most `max_share` of the map's."""
    if len(vmap) == 0:
        return []
    xy = vmap.s.mean[:len(vmap), :2]
    extent = (xy.max(0).values - xy.min(0).values).clamp(min=1e-6)
    whole = float(extent[0] * extent[1])
    out = []
    for name in vmap.class_names:
        for inst in locate(vmap, name, min_points=min_points):
            dx, dy = inst.box_max[0] - inst.box_min[0], inst.box_max[1] - inst.box_min[1]
            if dx * dy <= max_share * whole:
                out.append(inst)
    return out


def write_map_report(out: Path, vmap: VoxelMap, summary: dict[str, Any],
                     min_points: int = 5) -> Path:
    """Write ``top_view.png`` and ``report.html`` into `out`; returns the HTML path."""
    instances = object_instances(vmap, min_points)
    top_view(vmap, instances).save(out / "top_view.png")
    legend = "".join(f"<span style='background:rgb{tuple(int(c) for c in col)};padding:0 .6em'>"
                     f"&nbsp;</span> {html.escape(n)} &nbsp; "
                     for n, col in zip(vmap.class_names, vmap.palette))
    rows = "".join(
        f"<tr><td>{html.escape(i.class_name)}</td><td>{_v(i.centroid)}</td><td>{_v(i.box_min)}"
        f"</td><td>{_v(i.box_max)}</td><td>{i.points}</td><td>{i.voxels}</td>"
        f"<td>{i.confidence:.3f}</td></tr>" for i in instances)
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>fit3d_ros map</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px;text-align:left}}
img{{max-width:720px;border:1px solid #ccc}}</style></head><body>
<h1>fit3d_ros semantic map</h1><p>{len(vmap)} voxels of {vmap.cfg.voxel_size} m in frame
<b>{html.escape(vmap.cfg.frame)}</b>, {vmap.frames} clouds.</p>
<p>{legend}</p><figure><img src="top_view.png"><figcaption>Top view (x right, y up),
coloured by class; boxes: instances</figcaption></figure>
<h2>Instances</h2><table><tr><th>class</th><th>centroid</th><th>box min</th><th>box max</th>
<th>points</th><th>voxels</th><th>confidence</th></tr>{rows}</table>
<h2>Summary</h2><pre>{html.escape(json.dumps(summary, indent=1, default=str)[:20000])}</pre>
</body></html>"""
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _v(x: list[float]) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in x) + ")"
