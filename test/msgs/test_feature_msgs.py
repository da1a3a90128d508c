"""Feature maps over any channel count: channel-major 32FC1 round trip and cv_bridge's arithmetic."""
from __future__ import annotations

import numpy as np
import pytest

from fit3d_ros.msgs import (ConversionError, feature_info, features_from_msg,
                            features_from_msgs, features_to_msg, numpy_to_image)

CV_CN_SHIFT, CV_CN_MAX = 3, 512  # OpenCV core/hal/interface.h
CV_32F = 5


def cv_bridge_channels(encoding: str) -> int:
    """Channels cv_bridge decodes for `encoding`: CV_MAKETYPE then CV_MAT_CN (OpenCV's
    macros written out, the way cv_bridge's getCvType / imgmsg_to_cv2 use them)."""
    n = int(encoding.upper().split("C")[-1])
    cv_type = CV_32F + ((n - 1) << CV_CN_SHIFT)                       # CV_MAKETYPE
    return ((cv_type & ((CV_CN_MAX - 1) << CV_CN_SHIFT)) >> CV_CN_SHIFT) + 1  # CV_MAT_CN


def cv_bridge_decode(msg) -> np.ndarray:
    """cv_bridge's Python decode: (height, width, channels-from-the-type-mask)."""
    n = cv_bridge_channels(msg.encoding)
    flat = np.frombuffer(bytes(msg.data), "<f4")
    return flat[:msg.height * msg.width * n].reshape(msg.height, msg.width, n)


def test_cv_bridge_arithmetic_is_what_the_issue_reports():
    assert cv_bridge_channels("32FC384") == 384
    assert cv_bridge_channels("32FC512") == 512
    assert cv_bridge_channels("32FC768") == 256
    assert cv_bridge_channels("32FC1536") == 512


@pytest.mark.parametrize("channels", [3, 384, 512, 768, 1536])
def test_channel_major_round_trip_and_standard_decode(types, channels):
    rng = np.random.default_rng(channels)
    feats = rng.standard_normal((5, 7, channels)).astype(np.float32)
    msg = features_to_msg(feats, 12, "cam", types)
    assert msg.encoding == "32FC1" and (msg.height, msg.width) == (5 * channels, 7)
    info = feature_info(channels, 5, 7)
    np.testing.assert_array_equal(features_from_msg(msg, channels), feats)
    np.testing.assert_array_equal(features_from_msg(msg, info), feats)
    (again,) = features_from_msgs([msg], channels)
    np.testing.assert_array_equal(again, feats)
    # a standard decoder reads the right thing: plane c = feats[..., c] (slow reference)
    planes = cv_bridge_decode(msg)[..., 0]
    for c in (0, channels // 2, channels - 1):
        np.testing.assert_array_equal(planes[c * 5:(c + 1) * 5], feats[..., c])
    if channels > CV_CN_MAX:  # the old form is misread by cv_bridge
        old = numpy_to_image(feats, f"32FC{channels}", 12, "cam", types)
        assert cv_bridge_decode(old).shape[2] != channels


def test_plain_32fc_form_and_errors(types):
    feats = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    plain = numpy_to_image(feats, "32FC4", 1, "cam", types)
    np.testing.assert_array_equal(features_from_msg(plain), feats)
    with pytest.raises(ConversionError, match="expected 5"):
        features_from_msg(plain, 5)
    msg = features_to_msg(feats, 1, "cam", types)
    with pytest.raises(ConversionError, match="cannot hold"):
        features_from_msg(msg, 5)
