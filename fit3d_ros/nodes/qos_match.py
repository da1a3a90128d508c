"""QoS ``auto``: subscribe with the reliability the publishers offer (like rosbag2 record).

Design note: a best-effort subscription matches every publisher, but multi-MB clouds and
images from a *reliable* publisher then arrive without fragment repair, and one lost
UDP fragment loses the whole sample (0–2 of 8 KITTI clouds arrived; reliable: 8 of 8,
test/robustness/test_hostile_node.py). ``auto`` starts best effort and, on a timer,
re-creates a subscription as reliable once every publisher of its topic offers
reliable (back to best effort when a best-effort publisher appears). Subscriptions that
cannot be re-created (real ``message_filters.Subscriber``) keep their profile.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

from rclpy.qos import QoSProfile, ReliabilityPolicy

from fit3d_ros.sensors.sync import SubscriberFilter

QOS_HELP = ("input QoS: auto (reliability of the publishers) | sensor_data | reliable | "
            "transient_local")


def offered_reliability(node, topic: str) -> ReliabilityPolicy | None:
    """RELIABLE if every publisher of `topic` offers it, BEST_EFFORT if one does not,
    None without publishers."""
    infos = node.get_publishers_info_by_topic(node.resolve_topic_name(topic))
    if not infos:
        return None
    if all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos):
        return ReliabilityPolicy.RELIABLE
    return ReliabilityPolicy.BEST_EFFORT


class QoSMatcher:
    """Keeps each subscriber's reliability matched to its publishers (see the note)."""

    def __init__(self, node, subscribers: Sequence[Any], qos: QoSProfile,
                 period_s: float = 1.0) -> None:
        self.node = node
        self.subs = [s for s in subscribers if hasattr(s, "resubscribe")]
        self.current = {id(s): qos.reliability for s in self.subs}
        self.qos = qos
        self.changes = 0
        self.timer = node.create_timer(period_s, self.check)

    def check(self) -> None:
        for sub in self.subs:
            want = offered_reliability(self.node, sub.topic)
            if want is None or want == self.current[id(sub)]:
                continue
            qos = copy.copy(self.qos)
            qos.reliability = want
            sub.resubscribe(qos)
            self.current[id(sub)] = want
            self.changes += 1
            self.node.get_logger().info(f"{sub.topic}: subscription now {want.name.lower()} "
                                        "(matching its publishers)")


def subscribe(node, msg_type, topic: str, callback, qos: QoSProfile) -> SubscriberFilter:
    """A plain subscription that `QoSMatcher` can re-create with another reliability."""
    sub = SubscriberFilter(node, msg_type, topic, qos)
    sub.registerCallback(callback)
    return sub


def match_if_auto(node, qos_name: str, subscribers: Sequence[Any], qos: QoSProfile
                  ) -> QoSMatcher | None:
    """A `QoSMatcher` over `subscribers` when the node's ``qos`` parameter is ``auto``."""
    return QoSMatcher(node, subscribers, qos) if qos_name == "auto" else None
