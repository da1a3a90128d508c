"""BagWriter / BagReader / bag_info on synthetic messages with closed-form expectations."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fit3d_ros.logs.bag import BagError, BagReader, BagWriter, bag_info, bag_storage, open_bag
from fit3d_ros.msgs import image_to_numpy, numpy_to_image, rosbags_types

T0 = 1_000_000_000
DT = 100_000_000  # 10 Hz
IMAGE = "sensor_msgs/msg/Image"


def _pixels(i: int) -> np.ndarray:
    return (np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3) + i).astype(np.uint8)


def _write(path: Path, n: int = 5, **kw) -> None:
    types = rosbags_types()
    with BagWriter(path, **kw) as w:
        for i in range(n):
            stamp = T0 + i * DT
            w.write("/cam/image", IMAGE, stamp, numpy_to_image(_pixels(i), "rgb8", stamp,
                                                               "cam", types))
            if i % 2 == 0:  # a second topic at 5 Hz
                w.write("/cam/mono", IMAGE, stamp, numpy_to_image(_pixels(i)[..., 0], "mono8",
                                                                  stamp, "cam", types))


@pytest.mark.parametrize("name,storage,expect", [
    ("run.mcap", None, "mcap"), ("run.db3", None, "sqlite3"), ("rundir", None, "sqlite3"),
    ("rundir_mcap", "mcap", "mcap")])
def test_round_trip_every_layout(tmp_path, name, storage, expect):
    out = tmp_path / name
    _write(out, storage=storage)
    assert bag_storage(out) == expect
    assert out.is_file() == name.endswith((".mcap", ".db3"))
    assert sorted(os.listdir(tmp_path)) == [name]  # no temporary leftovers
    with BagReader(out) as bag:
        assert {k: (v.msgtype, v.count) for k, v in bag.topics.items()} == {
            "/cam/image": (IMAGE, 5), "/cam/mono": (IMAGE, 3)}
        assert (bag.start_ns, bag.end_ns) == (T0, T0 + 4 * DT)
        assert bag.duration_s == pytest.approx(0.4, abs=1e-12)
        msgs = list(bag.messages(["/cam/image"]))
        assert [m.index for m in msgs] == [0, 1, 2, 3, 4]
        assert [m.log_time_ns for m in msgs] == [T0 + i * DT for i in range(5)]
        for i, m in enumerate(msgs):
            np.testing.assert_array_equal(image_to_numpy(m.msg), _pixels(i))


def test_time_window_and_topic_selection(tmp_path):
    out = tmp_path / "w.mcap"
    _write(out)
    with open_bag(out) as bag:
        got = [(m.topic, m.log_time_ns) for m in bag.messages(start_ns=T0 + DT,
                                                              stop_ns=T0 + 3 * DT)]
        # start inclusive, stop exclusive
        assert sorted(got) == sorted([("/cam/image", T0 + DT), ("/cam/image", T0 + 2 * DT),
                                      ("/cam/mono", T0 + 2 * DT)])
        with pytest.raises(BagError, match="/nope"):
            list(bag.messages(["/nope"]))


def test_single_mcap_is_a_standard_mcap_file(tmp_path):
    """The .mcap output is readable by the reference `mcap` library (ros2 profile)."""
    mcap_reader = pytest.importorskip("mcap.reader")
    out = tmp_path / "std.mcap"
    _write(out)
    with open(out, "rb") as f:
        reader = mcap_reader.make_reader(f)
        assert reader.get_header().profile == "ros2"
        summary = reader.get_summary()
        assert summary.statistics.message_count == 8
        assert sorted(c.topic for c in summary.channels.values()) == ["/cam/image", "/cam/mono"]
        assert {s.encoding for s in summary.schemas.values()} == {"ros2msg"}


def test_info_counts_rates_duration(tmp_path):
    out = tmp_path / "i.mcap"
    _write(out)
    info = bag_info(out)
    assert info["storage"] == "mcap"
    assert info["topics"]["/cam/image"] == {"type": IMAGE, "count": 5, "rate_hz": 10.0}
    assert info["topics"]["/cam/mono"] == {"type": IMAGE, "count": 3, "rate_hz": 5.0}
    assert info["duration_s"] == pytest.approx(0.4, abs=1e-12)
    assert (info["start_ns"], info["end_ns"], info["message_count"]) == (T0, T0 + 4 * DT, 8)


def test_exception_inside_writer_leaves_nothing(tmp_path):
    out = tmp_path / "fail.mcap"
    with pytest.raises(RuntimeError, match="boom"):
        with BagWriter(out) as w:
            w.write("/x", IMAGE, T0, numpy_to_image(_pixels(0), "rgb8", T0, "c",
                                                    rosbags_types()))
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_existing_output_refused_unless_overwrite(tmp_path):
    out = tmp_path / "o.mcap"
    _write(out, n=1)
    with pytest.raises(FileExistsError):
        _write(out, n=2)
    _write(out, n=3, overwrite=True)
    with BagReader(out) as bag:
        assert bag.topics["/cam/image"].count == 3


def test_writer_rejects_mismatched_type_and_bad_message(tmp_path):
    types = rosbags_types()
    with pytest.raises(BagError, match=r"/cam/image message 1 .*PointCloud2"):
        with BagWriter(tmp_path / "t.mcap") as w:
            w.write("/cam/image", IMAGE, T0, numpy_to_image(_pixels(0), "rgb8", T0, "c", types))
            w.write("/cam/image", "sensor_msgs/msg/PointCloud2", T0 + 1, object())
    with pytest.raises(BagError, match=r"/cam/image message 0 .*does not serialise"):
        with BagWriter(tmp_path / "t.mcap") as w:
            w.write("/cam/image", IMAGE, T0, object())
    assert os.listdir(tmp_path) == []


def test_missing_bag_and_unknown_suffix(tmp_path):
    with pytest.raises(FileNotFoundError):
        BagReader(tmp_path / "missing.mcap")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BagError, match="unknown bag format"):
        BagReader(tmp_path / "notes.txt")


@pytest.mark.parametrize("name,storage", [("z.mcap", None), ("zdir", None), ("zmdir", "mcap")])
def test_compressed_round_trip(tmp_path, name, storage):
    out = tmp_path / name
    _write(out, n=5, storage=storage, compress=True)
    with BagReader(out) as bag:
        msgs = list(bag.messages(["/cam/image"]))
        assert len(msgs) == 5
        for i, m in enumerate(msgs):
            np.testing.assert_array_equal(image_to_numpy(m.msg), _pixels(i))
    if name.endswith(".mcap"):
        mcap_reader = pytest.importorskip("mcap.reader")
        with open(out, "rb") as f:
            chunks = mcap_reader.make_reader(f).get_summary().chunk_indexes
            assert chunks and {c.compression for c in chunks} == {"zstd"}


def test_compressed_bare_db3_refused(tmp_path):
    with pytest.raises(BagError, match="cannot record compression"):
        BagWriter(tmp_path / "x.db3", compress=True)


def test_log_time_must_be_a_non_negative_integer(tmp_path):
    msg = numpy_to_image(_pixels(0), "rgb8", T0, "c", rosbags_types())
    with BagWriter(tmp_path / "s.mcap") as w:
        w.write("/x", IMAGE, np.int64(T0), msg)  # numpy integers are fine
    for bad in (1.5e9, -1):
        with pytest.raises(BagError, match=r"/x message 0: invalid log time"):
            with BagWriter(tmp_path / "b.mcap") as w:
                w.write("/x", IMAGE, bad, msg)
    assert sorted(os.listdir(tmp_path)) == ["s.mcap"]


def test_overwrite_replaces_directory_and_file_kinds(tmp_path):
    out = tmp_path / "bag"
    _write(out, n=2)                      # sqlite3 directory
    _write(out, n=4, overwrite=True, storage="mcap")
    assert bag_storage(out) == "mcap"
    with BagReader(out) as bag:
        assert bag.topics["/cam/image"].count == 4
    assert sorted(os.listdir(tmp_path)) == ["bag"]
