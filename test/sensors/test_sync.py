"""ApproximateTimeSynchronizer: message_filters' policy cases, worked out by hand."""
from __future__ import annotations

import random
import sys
from types import SimpleNamespace

import pytest

from fit3d_ros.sensors import ApproximateTimeSynchronizer, make_ros_synchronizer
from fit3d_ros.sensors.sync import SubscriberFilter, make_subscriber

MS = 1_000_000
S = 1_000_000_000


def msg(stamp_ns: int, data=None):
    stamp = SimpleNamespace(sec=stamp_ns // S, nanosec=stamp_ns % S)
    return SimpleNamespace(header=SimpleNamespace(stamp=stamp, frame_id=""), data=data)


class Collector:
    def __init__(self):
        self.sets = []

    def __call__(self, *msgs):
        self.sets.append(msgs)

    def stamps(self):
        return [tuple(m.header.stamp.sec * S + m.header.stamp.nanosec for m in s)
                for s in self.sets]


def test_pairs_combine_as_in_message_filters():
    # message_filters test_approxsync.test_approx, first part
    out = Collector()
    sync = ApproximateTimeSynchronizer(2, 1, 0.1, out)
    for t in range(10):
        out.sets.clear()
        a, b = msg(t * S, 33), msg(t * S, 34)
        sync.add(0, a)
        assert out.sets == []
        sync.add(1, b)
        assert out.sets == [(a, b)]


@pytest.mark.parametrize("n", range(1, 10))
def test_scrambled_sequences_recombine(n):
    # message_filters test_approxsync.test_approx, second part
    rng = random.Random(n)
    seq0 = [msg(t * S, rng.random()) for t in range(n)]
    seq1 = [msg(t * S, rng.random()) for t in range(n)]
    out = Collector()
    sync = ApproximateTimeSynchronizer(2, n, 0.1, out)
    for m in rng.sample(seq0, n):
        sync.add(0, m)
    assert out.sets == []
    for m in rng.sample(seq1, n):
        sync.add(1, m)
    got = {tuple(id(m) for m in pair) for pair in out.sets}
    assert len(out.sets) == n and got == {(id(a), id(b)) for a, b in zip(seq0, seq1)}


def test_slop_boundary_is_strict():
    out = Collector()
    sync = ApproximateTimeSynchronizer(2, 5, 0.1, out)
    sync.add(0, msg(0))
    sync.add(1, msg(100 * MS))  # exactly slop apart: candidate, but spread must be < slop
    assert out.sets == []
    sync.add(1, msg(100 * MS - 1))
    assert out.stamps() == [(0, 100 * MS - 1)]
    zero = ApproximateTimeSynchronizer(2, 5, 0.0, out)
    zero.add(0, msg(5))
    zero.add(1, msg(5))  # slop 0 never matches, as in message_filters
    assert len(out.sets) == 1


def test_nearest_stamp_wins_and_rest_stays_queued():
    out = Collector()
    sync = ApproximateTimeSynchronizer(2, 10, 0.1, out)
    for t in (0, 40, 80):
        sync.add(0, msg(t * MS))
    sync.add(1, msg(50 * MS))  # |50-40| = 10 < |50-80| = 30 < |50-0| = 50
    assert out.stamps() == [(40 * MS, 50 * MS)]
    assert sorted(sync.queues[0]) == [0, 80 * MS] and sync.queues[1] == {}
    sync.add(1, msg(75 * MS))
    assert out.stamps()[-1] == (80 * MS, 75 * MS)


def test_out_of_order_arrival():
    out = Collector()
    sync = ApproximateTimeSynchronizer(2, 10, 0.05, out)
    sync.add(1, msg(2 * S))
    sync.add(1, msg(1 * S))  # late message on the same input
    sync.add(0, msg(1 * S + 10 * MS))
    sync.add(0, msg(2 * S - 10 * MS))
    assert out.stamps() == [(1 * S + 10 * MS, 1 * S), (2 * S - 10 * MS, 2 * S)]


def test_queue_overflow_drops_oldest_stamp():
    out = Collector()
    sync = ApproximateTimeSynchronizer(2, 2, 0.1, out)
    for t in (0, 1, 2):
        sync.add(0, msg(t * S))
    assert sorted(sync.queues[0]) == [1 * S, 2 * S]
    sync.add(1, msg(0))
    assert out.sets == []  # its partner was dropped
    sync.add(0, msg(S // 2))  # older than everything in a full queue: dropped at once
    assert sorted(sync.queues[0]) == [1 * S, 2 * S]
    sync.add(1, msg(1 * S + 1))
    assert out.stamps() == [(1 * S, 1 * S + 1)]


def test_three_inputs_try_combinations_nearest_first():
    out = Collector()
    sync = ApproximateTimeSynchronizer(3, 10, 0.02, out)
    for t in (0, 33, 66):
        sync.add(0, msg(t * MS))  # camera
    for t in (1, 34):
        sync.add(1, msg(t * MS))  # depth
    assert out.sets == []
    # lidar at 50 ms: camera candidates 66 (16 ms) then 33 (17 ms), depth 34 (16 ms);
    # (66, 34, 50) spreads 32 ms >= 20, (33, 34, 50) spreads 17 ms < 20 -> emitted
    sync.add(2, msg(50 * MS))
    assert out.stamps() == [(33 * MS, 34 * MS, 50 * MS)]
    # lidar at 10 ms: no depth within 20 ms of it except 1 ms -> (0, 1, 10)
    sync.add(2, msg(10 * MS))
    assert out.stamps()[-1] == (0, 1 * MS, 10 * MS)


def test_headerless_and_explicit_stamps():
    out = Collector()
    sync = ApproximateTimeSynchronizer(2, 3, 0.1, out)
    with pytest.raises(ValueError, match="input 1: .* no header"):
        sync.add(1, object())
    sync.add(0, "a", stamp_ns=5 * S)
    sync.add(1, "b", stamp_ns=5 * S + 1)
    assert out.sets == [("a", "b")]
    with pytest.raises(ValueError, match="input_index 2"):
        sync.add(2, "c", stamp_ns=0)
    now = ApproximateTimeSynchronizer(2, 3, 10.0, out, allow_headerless=True)
    now.add(0, "x")
    now.add(1, "y")  # both stamped with wall-clock time, well within 10 s
    assert out.sets[-1] == ("x", "y")


def test_rclpy_messages_are_stamped_from_header():
    from sensor_msgs.msg import Image

    out = Collector()
    sync = ApproximateTimeSynchronizer(2, 3, 0.1, out)
    a, b = Image(), Image()
    a.header.stamp.sec, b.header.stamp.sec, b.header.stamp.nanosec = 7, 7, 5 * MS
    sync.add(0, a)
    sync.add(1, b)
    assert out.sets == [(a, b)]


@pytest.mark.parametrize("args", [(0, 1, 0.1), (2, 0, 0.1), (2, 1, -1.0)])
def test_bad_arguments(args):
    with pytest.raises(ValueError):
        ApproximateTimeSynchronizer(*args, callback=print)


def test_make_ros_synchronizer_with_fallback_subscribers():
    class FakeNode:
        def __init__(self):
            self.subs = {}

        def create_subscription(self, msg_type, topic, callback, qos, **kw):
            self.subs[topic] = callback
            return (msg_type, topic, qos)

    node = FakeNode()
    subs = [make_subscriber(node, object, "/rgb"), SubscriberFilter(node, object, "/depth")]
    out = Collector()
    sync = make_ros_synchronizer(subs, 5, 0.05, out)
    node.subs["/depth"](msg(S + 10 * MS))
    node.subs["/rgb"](msg(S))
    node.subs["/rgb"](SimpleNamespace())  # headerless: logged and dropped, no exception
    assert out.stamps() == [(S, S + 10 * MS)]
    assert isinstance(sync, ApproximateTimeSynchronizer)
    with pytest.raises(TypeError):
        make_ros_synchronizer([object()], 5, 0.05, out)


def test_feed_propagates_callback_errors_but_drops_headerless():
    def boom(*msgs):
        raise ValueError("node bug")

    sync = ApproximateTimeSynchronizer(2, 5, 0.1, boom)
    stamped = SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=1, nanosec=0)))
    sync.feed(SimpleNamespace(), 0)          # headerless: logged and dropped
    sync.feed(stamped, 0)
    with pytest.raises(ValueError, match="node bug"):
        sync.feed(stamped, 1)


def test_resubscribable_subscribers_are_ours_even_where_message_filters_imports(monkeypatch):
    """QoS auto re-creates subscriptions: with the real message_filters importable (robots),
    make_subscriber(resubscribable=True) still gives our SubscriberFilter (which can)."""
    class FakeMF(SimpleNamespace):
        class SimpleFilter:
            pass

        class Subscriber(SimpleFilter):
            def __init__(self, node, msg_type, topic, qos_profile=10, **kw):
                self.topic = topic

    monkeypatch.setitem(sys.modules, "message_filters", FakeMF())

    class FakeNode:
        def __init__(self):
            self.created, self.destroyed = [], []

        def create_subscription(self, msg_type, topic, callback, qos, **kw):
            self.created.append((topic, qos))
            return len(self.created)

        def destroy_subscription(self, sub):
            self.destroyed.append(sub)

    node = FakeNode()
    assert isinstance(make_subscriber(node, object, "/a", 5), FakeMF.Subscriber)
    own = make_subscriber(node, object, "/b", 5, resubscribable=True)
    assert isinstance(own, SubscriberFilter)
    own.resubscribe("reliable")
    assert node.created == [("/b", 5), ("/b", "reliable")] and node.destroyed == [1]
