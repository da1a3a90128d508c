"""``geometry_msgs/TransformStamped`` and ``tf2_msgs/TFMessage`` ⇄ `Transform`.

Design note: a TransformStamped with ``header.frame_id = P`` and ``child_frame_id = C``
maps points in C into P, exactly our `Transform(parent_frame=P, child_frame=C)`; the
stamp is integer nanoseconds so it survives the round trip exactly, and rotations go
through the quaternion (x, y, z, w) in float64 (round trip to ~1e-16).
"""
from __future__ import annotations

import numpy as np

from ..sensors.transforms import Transform
from .types import ConversionError, MsgTypes, header, header_of


def transform_stamped_to_transform(msg) -> Transform:
    """`Transform` (parent = header.frame_id, child = child_frame_id, stamp in ns)."""
    stamp, parent = header_of(msg)
    try:
        t, q = msg.transform.translation, msg.transform.rotation
        trans = np.array([t.x, t.y, t.z], dtype=np.float64)
        quat = np.array([q.x, q.y, q.z, q.w], dtype=np.float64)
        child = str(msg.child_frame_id)
    except AttributeError as exc:
        raise ConversionError(f"not a TransformStamped: {exc}") from exc
    if not np.all(np.isfinite(trans)):
        raise ConversionError(f"transform {parent}<-{child} has a non-finite translation")
    try:
        return Transform.from_quat_trans(quat, trans, parent_frame=parent,
                                         child_frame=child, stamp=stamp)
    except ValueError as exc:
        raise ConversionError(f"transform {parent}<-{child}: {exc}") from exc


def transform_to_transform_stamped(tf: Transform, types: MsgTypes):
    """A TransformStamped for `tf` (its stamp, parent and child frames)."""
    x, y, z = (float(v) for v in tf.translation)
    qx, qy, qz, qw = (float(v) for v in tf.quat)
    return types.TransformStamped(
        header=header(tf.stamp, tf.parent_frame, types), child_frame_id=tf.child_frame,
        transform=types.Transform(translation=types.Vector3(x=x, y=y, z=z),
                                  rotation=types.Quaternion(x=qx, y=qy, z=qz, w=qw)))


def tf_message_to_transforms(msg) -> list[Transform]:
    """All transforms of a TFMessage (``/tf`` or ``/tf_static``), in message order."""
    try:
        items = list(msg.transforms)
    except (AttributeError, TypeError) as exc:
        raise ConversionError(f"not a TFMessage: {type(msg).__name__}") from exc
    return [transform_stamped_to_transform(m) for m in items]


def transforms_to_tf_message(tfs, types: MsgTypes):
    """A TFMessage holding `tfs`; ConversionError where `types` lacks tf2_msgs."""
    if types.TFMessage is None:
        raise ConversionError(f"tf2_msgs/TFMessage is not available for {types.kind} "
                              "messages (tf2_msgs is not importable)")
    return types.TFMessage(transforms=[transform_to_transform_stamped(t, types) for t in tfs])
