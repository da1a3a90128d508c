"""``sensor_msgs/CameraInfo`` ⇄ `CameraModel`.

Design note: K, D, R, P, size and distortion model map one to one (float64, so the
round trip is exact); an all-zero K (an uncalibrated camera) is rejected rather than
turned into a camera that projects everything to one pixel. A camera without distortion
is written as ``plumb_bob`` with five zeros, the ROS convention. Values no real camera
has are rejected too (`SANE`: focal lengths, principal point, ``K[2,2] = 1``, at most 14
distortion coefficients of bounded size): they pass the finiteness check but project
points to nonsense. Binning and ROI are
written as "full resolution, no ROI"; on reading, a non-trivial binning or ROI is
rejected because `CameraModel` has no notion of them.
"""
from __future__ import annotations

import numpy as np

from ..sensors.camera import CameraModel
from .types import ConversionError, MsgTypes, header, header_of

# Bounds of a physical camera's calibration (pixels; OpenCV has at most 14 coefficients).
SANE = {"focal_px": (1e-2, 1e7), "max_distortion": 14, "distortion_abs": 1e4,
        "size_px": 1 << 16}


def _floats(value, n: int | None, name: str) -> np.ndarray:
    a = np.asarray(value, dtype=np.float64).reshape(-1)
    if n is not None and a.size != n:
        raise ConversionError(f"CameraInfo.{name} has {a.size} values, expected {n}")
    if not np.all(np.isfinite(a)):
        raise ConversionError(f"CameraInfo.{name} has non-finite values: {a.tolist()}")
    return a


def camera_info_to_model(msg) -> CameraModel:
    """The `CameraModel` of a CameraInfo (frame_id from its header)."""
    _, frame_id = header_of(msg)
    K = _floats(msg.k, 9, "k").reshape(3, 3)
    if not np.any(K):
        raise ConversionError("CameraInfo.k is all zero: the camera is uncalibrated")
    D = _floats(msg.d, None, "d")
    _check_sane(K, D, int(msg.width), int(msg.height))
    R = _floats(msg.r, 9, "r").reshape(3, 3)
    P = _floats(msg.p, 12, "p").reshape(3, 4)
    if not np.any(R):  # some drivers leave R zero for monocular cameras
        R = np.eye(3)
    if not np.any(P):
        P = None
    for name in ("binning_x", "binning_y"):
        if int(getattr(msg, name, 0) or 0) > 1:
            raise ConversionError(f"CameraInfo.{name}={getattr(msg, name)} is not supported")
    roi = getattr(msg, "roi", None)
    if roi is not None and int(roi.width) and int(roi.height) and (
            int(roi.width) != int(msg.width) or int(roi.height) != int(msg.height)):
        raise ConversionError(f"CameraInfo.roi {roi.width}x{roi.height} is not supported")
    try:
        return CameraModel(K=K, width=int(msg.width), height=int(msg.height),
                           D=D if D.size else None,
                           distortion_model=str(msg.distortion_model) or "plumb_bob",
                           frame_id=frame_id, R=R, P=P)
    except ValueError as exc:
        raise ConversionError(f"CameraInfo: {exc}") from exc


def _check_sane(K: np.ndarray, D: np.ndarray, width: int, height: int) -> None:
    lo, hi = SANE["focal_px"]
    if not all(lo <= f <= hi for f in (K[0, 0], K[1, 1])):
        raise ConversionError(f"CameraInfo focal lengths fx={K[0, 0]:g}, fy={K[1, 1]:g} "
                              f"outside [{lo:g}, {hi:g}] px")
    if K[2, 2] != 1 or np.any(K[2, :2]) or K[1, 0]:
        raise ConversionError(f"CameraInfo.k last row {K[2].tolist()} / K[1,0] is not a "
                              "pinhole matrix ([0, 0, 1], 0)")
    if not 0 < width <= SANE["size_px"] or not 0 < height <= SANE["size_px"]:
        raise ConversionError(f"CameraInfo size {width}x{height} is not a camera's")
    if not (-width <= K[0, 2] <= 2 * width and -height <= K[1, 2] <= 2 * height):
        raise ConversionError(f"CameraInfo principal point ({K[0, 2]:g}, {K[1, 2]:g}) lies "
                              f"far outside the {width}x{height} image")
    if D.size > SANE["max_distortion"]:
        raise ConversionError(f"CameraInfo.d has {D.size} coefficients (at most "
                              f"{SANE['max_distortion']})")
    if D.size and np.abs(D).max() > SANE["distortion_abs"]:
        raise ConversionError(f"CameraInfo.d has a coefficient of {np.abs(D).max():g} "
                              f"(|d| <= {SANE['distortion_abs']:g})")


def model_to_camera_info(cam: CameraModel, stamp_ns: int, frame_id: str, types: MsgTypes):
    """A CameraInfo for `cam` (D=None -> plumb_bob with five zeros)."""
    D = np.zeros(5) if cam.D is None else np.asarray(cam.D, dtype=np.float64)
    roi = types.RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0,
                                 do_rectify=False)
    return types.CameraInfo(
        header=header(stamp_ns, frame_id, types), height=int(cam.height),
        width=int(cam.width), distortion_model=cam.distortion_model or "plumb_bob",
        d=types.float64_array(D), k=types.float64_array(cam.K),
        r=types.float64_array(cam.R), p=types.float64_array(cam.P),
        binning_x=0, binning_y=0, roi=roi)
