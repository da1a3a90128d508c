"""Message constructors for both ROS 2 Python flavours, plus stamps and headers.

Design note: conversions are duck-typed on field names, which rclpy messages
(``sensor_msgs.msg.Image``) and rosbags messages (``typestore.types[...]``) share. Only
*building* a message needs to know the flavour: rosbags dataclasses want every field as a
keyword and numpy arrays for sequences, rclpy messages want ``array.array`` for
``uint8[]`` (assigning numpy there costs ~50 ms per VGA image). `MsgTypes` is the
namespace of constructors plus those two array adapters, so every builder in
``fit3d_ros.msgs`` takes one ``types`` argument and works on both.
"""
from __future__ import annotations

import array
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import numpy as np
from rosbags.typesys import Stores, get_typestore

NS_PER_S = 1_000_000_000
_INT32_MIN, _INT32_MAX = -(2 ** 31), 2 ** 31 - 1


class ConversionError(ValueError):
    """A ROS message cannot be converted; the message says which field is wrong."""


def _numpy_uint8(data: np.ndarray) -> np.ndarray:
    return np.array(data, dtype=np.uint8, copy=True).reshape(-1)  # never alias the caller's


def _array_uint8(data: np.ndarray) -> array.array:
    out = array.array("B")
    out.frombytes(np.ascontiguousarray(data, dtype=np.uint8).reshape(-1).data)
    return out


def _numpy_float64(data: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(data, dtype=np.float64).reshape(-1)


@dataclass(frozen=True)
class MsgTypes:
    """Constructors of the messages fit3d_ros reads and writes, for one flavour.

    ``kind`` is ``"rosbags"`` or ``"rclpy"``. ``TFMessage`` is None where the flavour
    lacks ``tf2_msgs`` (the PyPI ROS wheels ship no ``ros-tf2-msgs``).
    """

    kind: str
    Time: Callable[..., Any]
    Header: Callable[..., Any]
    Image: Callable[..., Any]
    CameraInfo: Callable[..., Any]
    RegionOfInterest: Callable[..., Any]
    PointCloud2: Callable[..., Any]
    PointField: Callable[..., Any]
    Vector3: Callable[..., Any]
    Quaternion: Callable[..., Any]
    Transform: Callable[..., Any]
    TransformStamped: Callable[..., Any]
    TFMessage: Callable[..., Any] | None
    uint8_array: Callable[[np.ndarray], Any] = _numpy_uint8
    float64_array: Callable[[np.ndarray], Any] = _numpy_float64


@lru_cache(maxsize=None)
def _rosbags_typestore(store: str | None):
    if store is None:
        if hasattr(Stores, "ROS2_KILTED"):
            chosen = Stores.ROS2_KILTED
        else:  # older rosbags: the newest ROS 2 store it knows (enum order is release order)
            chosen = [s for s in Stores if s.name.startswith("ROS2_")][-1]
    else:
        try:
            chosen = Stores(store) if not isinstance(store, Stores) else store
        except ValueError:
            chosen = Stores[str(store).upper()]
    return get_typestore(chosen)


def rosbags_typestore(store=None):
    """The rosbags typestore used by `rosbags_types` (default ``Stores.ROS2_KILTED``)."""
    return _rosbags_typestore(store)


@lru_cache(maxsize=None)
def rosbags_types(store=None) -> MsgTypes:
    """Constructors of rosbags message dataclasses (default store ``ROS2_KILTED``)."""
    t = rosbags_typestore(store).types
    return MsgTypes(
        kind="rosbags",
        Time=t["builtin_interfaces/msg/Time"],
        Header=t["std_msgs/msg/Header"],
        Image=t["sensor_msgs/msg/Image"],
        CameraInfo=t["sensor_msgs/msg/CameraInfo"],
        RegionOfInterest=t["sensor_msgs/msg/RegionOfInterest"],
        PointCloud2=t["sensor_msgs/msg/PointCloud2"],
        PointField=t["sensor_msgs/msg/PointField"],
        Vector3=t["geometry_msgs/msg/Vector3"],
        Quaternion=t["geometry_msgs/msg/Quaternion"],
        Transform=t["geometry_msgs/msg/Transform"],
        TransformStamped=t["geometry_msgs/msg/TransformStamped"],
        TFMessage=t.get("tf2_msgs/msg/TFMessage"),
        uint8_array=_numpy_uint8,
        float64_array=_numpy_float64,
    )


@lru_cache(maxsize=None)
def rclpy_types() -> MsgTypes:
    """Constructors of rclpy (rosidl-generated) messages; imports them lazily.

    ``TFMessage`` is ``tf2_msgs.msg.TFMessage`` when importable, else None (no PyPI
    wheel ships tf2_msgs; inside a sourced ROS 2 install it is there).
    """
    try:  # optional: rclpy message packages only with the ros extra or a ROS 2 install
        from builtin_interfaces.msg import Time
        from geometry_msgs.msg import Quaternion, Transform, TransformStamped, Vector3
        from sensor_msgs.msg import (CameraInfo, Image, PointCloud2, PointField,
                                     RegionOfInterest)
        from std_msgs.msg import Header
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("rclpy message packages are missing; install the 'ros' extra "
                          f"or source a ROS 2 workspace ({exc})") from exc
    try:  # optional: no PyPI wheel ships tf2_msgs
        from tf2_msgs.msg import TFMessage
    except ImportError:
        TFMessage = None
    return MsgTypes(kind="rclpy", Time=Time, Header=Header, Image=Image,
                    CameraInfo=CameraInfo, RegionOfInterest=RegionOfInterest,
                    PointCloud2=PointCloud2, PointField=PointField, Vector3=Vector3,
                    Quaternion=Quaternion, Transform=Transform,
                    TransformStamped=TransformStamped, TFMessage=TFMessage,
                    uint8_array=_array_uint8, float64_array=_numpy_float64)


def stamp_to_ns(time_msg) -> int:
    """Integer nanoseconds of a ``builtin_interfaces/Time`` (or rclpy ``Time``, or int)."""
    if isinstance(time_msg, (int, np.integer)):
        return int(time_msg)
    if hasattr(time_msg, "nanoseconds") and not hasattr(time_msg, "nanosec"):
        return int(time_msg.nanoseconds)  # rclpy.time.Time
    try:
        sec, nanosec = int(time_msg.sec), int(time_msg.nanosec)
    except AttributeError as exc:
        raise ConversionError(f"not a time message (needs sec, nanosec): {time_msg!r}") from exc
    if not 0 <= nanosec < NS_PER_S:
        raise ConversionError(f"time nanosec={nanosec} outside [0, 1e9)")
    return sec * NS_PER_S + nanosec


def ns_to_time(ns: int, types: MsgTypes):
    """A ``builtin_interfaces/Time`` for integer nanoseconds (exact)."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    if not _INT32_MIN <= sec <= _INT32_MAX:
        raise ConversionError(f"stamp {ns} ns does not fit builtin_interfaces/Time (int32 sec)")
    return types.Time(sec=sec, nanosec=nanosec)


def header(stamp_ns: int, frame_id: str, types: MsgTypes):
    """A ``std_msgs/Header``."""
    if not isinstance(frame_id, str):
        raise ConversionError(f"frame_id must be a str, got {type(frame_id).__name__}")
    return types.Header(stamp=ns_to_time(stamp_ns, types), frame_id=frame_id)


def message_bytes(data, field: str = "data") -> np.ndarray:
    """A flat uint8 view of a message's byte field (numpy, array.array, bytes or list)."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ConversionError(f"{field} must hold uint8, got {data.dtype}")
        return data.reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def header_of(msg) -> tuple[int, str]:
    """(stamp ns, frame_id) of a stamped message."""
    try:
        h = msg.header
        return stamp_to_ns(h.stamp), str(h.frame_id)
    except AttributeError as exc:
        raise ConversionError(f"{type(msg).__name__} has no header.stamp/frame_id") from exc
