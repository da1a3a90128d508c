"""report.html: tables against hand-computed values, top-down views fitted to the cloud,
self-contained (data: URIs only), and rendered by a real headless Chromium."""
from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from fit3d_ros.pipeline.metrics import SegEvaluator
from fit3d_ros.pipeline.report import (
    bev_image,
    blend_preview,
    confusion_table,
    iou_table,
    write_report,
)
from fit3d_ros.sensors import PointCloud

NAMES = ["road", "car", "tree", "sky"]
# rows ground truth, columns prediction
CONF = np.array([[50, 10, 0, 0],
                 [5, 20, 5, 0],
                 [0, 0, 0, 0],
                 [0, 0, 0, 0]])
# IoU = TP / (row + column - TP), by hand: road 50/(60+55-50), car 20/(30+30-20),
# tree 0/(0+5-0); sky is in neither ground truth nor prediction: no IoU
IOU = {"road": 50 / 65, "car": 20 / 40, "tree": 0.0, "sky": None}


class Tables(HTMLParser):
    """Rows of cell texts (th and td) of every <table id=...> in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.imgs: list[dict[str, str]] = []
        self._table = self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id", f"t{len(self.tables)}"), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = a
            self._table[-1].append("")
        elif tag == "img":
            self.imgs.append(a)

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._table is not None and self._table and self._table[-1] and self._cell is not None:
            self._table[-1][-1] += data.strip()


def parse(page: str) -> Tables:
    p = Tables()
    p.feed(page)
    return p


def test_iou_table_matches_hand_computed_values():
    rows = parse(iou_table(NAMES, CONF)).tables["iou"]
    assert rows[0] == ["class", "IoU", "ground-truth points", "predicted points"]
    assert [r[0] for r in rows[1:]] == NAMES
    for r in rows[1:]:
        want = IOU[r[0]]
        assert (r[1] == "–") if want is None else float(r[1]) == pytest.approx(want, abs=5e-4)
    assert [(int(r[2]), int(r[3])) for r in rows[1:]] == [(60, 55), (30, 30), (0, 5), (0, 0)]


def test_confusion_table_has_labels_counts_and_row_shading():
    html = confusion_table(NAMES, CONF)
    rows = parse(html).tables["confusion"]
    assert rows[1] == NAMES                                 # prediction labels
    body = rows[2:]
    assert [r[0] for r in body] == NAMES                    # ground-truth labels
    assert np.array_equal(np.array([[int(c) for c in r[1:]] for r in body]), CONF)
    shades = [tuple(map(int, m)) for m in re.findall(r"background:rgb\((\d+), (\d+), (\d+)\)",
                                                     html)]
    # road row: 50/60 of the row → 255·(1 - 5/6) = 42 on red/green; empty cells white
    assert shades[0] == (42, 42, 255) and shades[2] == (255, 255, 255)
    assert "0%" in html and "100%" in html and "class='scale'" in html


def _cloud_with_extremes() -> tuple[PointCloud, np.ndarray, dict]:
    rng = np.random.default_rng(0)
    bulk = rng.normal(0, 1.0, (4000, 3))                    # dense centre, like a scan
    ends = np.array([[60.0, 2, 0], [-8, 0, 0], [3, 25, 0], [1, -4, 0]])  # far, asymmetric
    xyz = np.vstack([bulk, ends]).astype(np.float32)
    colors = np.full((len(xyz), 3), 90, np.uint8)
    marks = {(255, 0, 0): "x max", (0, 255, 0): "x min", (0, 0, 255): "y max",
             (255, 255, 0): "y min"}
    colors[-4:] = list(marks)
    return PointCloud(0, "base_link", xyz, rgb=colors), colors, marks


def test_bev_image_fits_the_whole_cloud():
    cloud, colors, marks = _cloud_with_extremes()
    img = bev_image(cloud, colors, size=400)
    rows, cols = img.shape[:2]
    assert max(rows, cols) == 400
    # aspect of the xy box (68 m along x → rows, 29 m along y → cols)
    assert rows / cols == pytest.approx(68 / 29, rel=0.03)
    where = {}
    for rgb, name in marks.items():
        hit = np.argwhere(np.all(img == rgb, axis=-1))
        assert len(hit), f"the {name} point was cut off"
        where[name] = hit.mean(axis=0)
    # x forward is up, y left is left; the extreme points sit at the borders (1 px margin)
    assert where["x max"][0] == pytest.approx(1, abs=1)
    assert where["x min"][0] == pytest.approx(rows - 2, abs=1)
    assert where["y max"][1] == pytest.approx(1, abs=1)
    assert where["y min"][1] == pytest.approx(cols - 2, abs=1)


def test_blend_is_the_mean_of_image_and_upsampled_preview():
    rgb = np.full((40, 60, 3), 200, np.uint8)
    preview = np.zeros((4, 6, 3), np.uint8)
    preview[..., 0] = 100
    up, mix = blend_preview(rgb, preview)
    assert up.shape == mix.shape == rgb.shape
    assert np.all(mix[..., 0] == 150) and np.all(mix[..., 1] == 100)


def _report(tmp_path: Path) -> Path:
    ev = SegEvaluator(NAMES)
    ev.total[:] = CONF
    seg = SimpleNamespace(class_names=NAMES,
                          palette=np.array([[128, 64, 128], [0, 0, 142], [107, 142, 35],
                                           [70, 130, 180]]))
    yy, xx = np.mgrid[0:120, 0:160]
    rgb = np.stack([xx * 1.5, yy * 2, np.full_like(xx, 60)], -1).astype(np.uint8)
    preview = np.random.default_rng(1).integers(0, 255, (6, 8, 3)).astype(np.uint8)
    cloud, _, _ = _cloud_with_extremes()
    metrics = {"bag": "x.mcap", "weights": "RANDOM-INIT vit", "miou": 0.63, "frames_in": 2,
               "latency_ms": {"backbone": {"p50": 12.0, "p90": 14.5, "p99": 15.0, "count": 2},
                              "segment": {"p50": 30.0, "p90": 31.0, "p99": 32.0, "count": 2}}}
    return write_report(tmp_path, metrics, {"/cam/image_raw": [(rgb, preview)] * 2},
                        [(cloud, np.zeros(len(cloud)))] * 2, seg, ev)


def test_report_is_self_contained(tmp_path):
    path = _report(tmp_path)
    page = path.read_text()
    p = parse(page)
    assert len(p.imgs) == 3 * 2 + 2                          # camera, PCA, blend ×2; bev ×2
    for img in p.imgs:
        head, data = img["src"].split(",", 1)
        assert head == "data:image/png;base64"
        assert Image.open(io.BytesIO(base64.b64decode(data))).size[0] > 0
    assert not re.search(r"(src|href)=['\"](?!data:)", page)  # nothing external
    assert [r[0] for r in p.tables["latency"][1:]] == ["backbone", "segment"]
    assert p.tables["latency"][1][1:] == ["12.00", "14.50", "15.00", "2"]
    assert (tmp_path / "confusion.json").is_file()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=5000"]

# after load: how many images decoded, and their natural sizes, written into the DOM
PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  document.body.setAttribute('data-loaded',
    imgs.filter(i => i.complete && i.naturalWidth > 0).length + '/' + imgs.length);
});</script>"""


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (Debian: apt-get "
                    "install -y chromium; .ci/run installs it): the browser check is skipped")
def test_report_renders_in_headless_chromium(tmp_path):
    page = _report(tmp_path).read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    chrome = _chromium()
    with tempfile.TemporaryDirectory() as profile:
        run = {"capture_output": True, "text": True, "timeout": 120, "check": False,
               "env": {**os.environ, "HOME": profile}}
        dom = subprocess.run([chrome, *CHROMIUM_FLAGS, f"--user-data-dir={profile}/a",
                              "--dump-dom", probe.as_uri()], **run)
        shot = tmp_path / "report.png"
        subprocess.run([chrome, *CHROMIUM_FLAGS, f"--user-data-dir={profile}/b",
                        f"--screenshot={shot}", "--window-size=1400,2400",
                        (tmp_path / "report.html").as_uri()], **run)
    assert 'data-loaded="8/8"' in dom.stdout, (dom.stdout[:500], dom.stderr[-2000:])
    tables = parse(dom.stdout).tables
    assert [r[0] for r in tables["iou"][1:]] == NAMES      # one row per class
    conf = np.array([[int(c) for c in r[1:]] for r in tables["confusion"][2:]])
    assert np.array_equal(conf, CONF)
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2400, 1400)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 200  # not blank: pictures drawn
    # the confusion matrix's fully-shaded scale end (pure blue) is on screen
    assert np.any(np.all(np.abs(img.astype(int) - (0, 0, 255)) < 8, axis=-1))
