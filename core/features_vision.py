"""Per-frame face descriptors from mediapipe FaceMesh landmarks (numpy, no torch).

FaceMesh 0.10.21 with ``refine_landmarks=True`` (478 landmarks incl. irises) in static-image mode: every frame
is analysed on its own, so a frame's row never depends on which frames (or which stream) came before it —
the property that makes the live path and the dataset builder give identical numbers.

Landmarks are put in pixel units, centred on the midpoint of the outer eye corners, rotated so the eye
line is horizontal (image y axis, pointing down) and divided by the outer inter-ocular distance (IOD).
Columns, in this order (``VISION_COLUMNS``; distances are in IOD units):

====  ======================  ==========================================================================
 0    face_present             1 when a face was found, 0 for the explicit "no face" row (all zeros)
 1    roll_rad                 angle of the eye line in the image (radians)
 2    yaw                      nose-tip x offset from the eye midpoint
 3    pitch                    nose-tip y offset below the eye midpoint
 4    yaw_depth                depth difference of the cheek edges (234 minus 454, FaceMesh z / IOD)
 5    mouth_open_inner         inner lip gap (13-14)
 6    mouth_open_outer         outer lip height (0-17)
 7    mouth_width              mouth corners (61-291)
 8    corner_lift_r            lip centre y minus right corner y (smile raises the corners)
 9    corner_lift_l            same, left corner
10    eye_open_r               right eye lid gap (159-145) / right eye width (33-133)
11    eye_open_l               left eye lid gap (386-374) / left eye width (362-263)
12    brow_raise_r             right eye centre y minus mid-brow (105) y
13    brow_raise_l             left eye centre y minus mid-brow (334) y
14    inner_brow_raise_r       inner eye corner (133) y minus inner brow (107) y
15    inner_brow_raise_l       inner eye corner (362) y minus inner brow (336) y
16    brow_gap                 distance between inner brows (107-336)
17    jaw_drop                 nose tip to chin (1-152)
18    upper_lip_raise          nose tip to upper lip (1-0)
19    nostril_width            alae (98-327)
20    cheek_raise_r            lower lid to mouth corner (145-61)
21    cheek_raise_l            lower lid to mouth corner (374-291)
22    gaze_x_r                 right iris centre (468) x offset from eye centre / eye width
23    gaze_y_r                 right iris centre y offset from eye centre / eye width
24    gaze_x_l                 left iris centre (473) x offset from eye centre / eye width
25    gaze_y_l                 left iris centre y offset from eye centre / eye width
====  ======================  ==========================================================================
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)

VISION_EXTRACTOR = "mediapipe-facemesh-0.10.21-descriptor"
VISION_VERSION = 1
N_LANDMARKS = 478
VISION_COLUMNS: tuple[str, ...] = (
    "face_present", "roll_rad", "yaw", "pitch", "yaw_depth",
    "mouth_open_inner", "mouth_open_outer", "mouth_width", "corner_lift_r", "corner_lift_l",
    "eye_open_r", "eye_open_l", "brow_raise_r", "brow_raise_l", "inner_brow_raise_r", "inner_brow_raise_l",
    "brow_gap", "jaw_drop", "upper_lip_raise", "nostril_width", "cheek_raise_r", "cheek_raise_l",
    "gaze_x_r", "gaze_y_r", "gaze_x_l", "gaze_y_l",
)  # fmt: skip
VISION_DIM = len(VISION_COLUMNS)
FACE_PRESENT_COLUMN = 0
_EYE_R_OUT, _EYE_R_IN, _EYE_L_IN, _EYE_L_OUT = 33, 133, 362, 263


def no_face_vision(n: int) -> np.ndarray:
    """The explicit "no face" input: float32 [n, VISION_DIM] zeros (face_present = 0)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return np.zeros((n, VISION_DIM), dtype=np.float32)


def face_visible_ratio(vision: np.ndarray) -> float:
    """Fraction of rows of a vision matrix that hold a face."""
    if vision.shape[0] == 0:
        return 0.0
    return float(np.mean(vision[:, FACE_PRESENT_COLUMN]))


def _normalise(points: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Centre, de-rotate and scale landmarks [478, 3] (pixels); returns (points, roll_rad, iod_px)."""
    right, left = points[_EYE_R_OUT, :2], points[_EYE_L_OUT, :2]
    centre = (right + left) / 2.0
    dx, dy = left - right
    iod = float(np.hypot(dx, dy))
    roll = float(np.arctan2(dy, dx))
    cos, sin = np.cos(-roll), np.sin(-roll)
    xy = points[:, :2] - centre
    rotated = np.stack([xy[:, 0] * cos - xy[:, 1] * sin, xy[:, 0] * sin + xy[:, 1] * cos], axis=1)
    out = np.empty_like(points)
    out[:, :2] = rotated / iod
    out[:, 2] = points[:, 2] / iod
    return out, roll, iod


def describe_landmarks(landmarks: np.ndarray, width_px: int, height_px: int) -> np.ndarray:
    """Descriptor row (float32 [VISION_DIM]) of FaceMesh landmarks [478, 3] in normalised image units."""
    if landmarks.shape != (N_LANDMARKS, 3):
        raise ValueError(f"expected landmarks of shape ({N_LANDMARKS}, 3), got {landmarks.shape}")
    # FaceMesh x is relative to width, y to height, z to width: bring all to pixels before geometry.
    pixels = landmarks.astype(np.float64) * np.array([width_px, height_px, width_px], dtype=np.float64)
    p, roll, iod = _normalise(pixels)
    if iod < 1e-6:
        return no_face_vision(1)[0]

    def dist(a: int, b: int) -> float:
        return float(np.hypot(*(p[a, :2] - p[b, :2])))

    lip_centre_y = (p[13, 1] + p[14, 1]) / 2.0
    eye_r_centre = (p[_EYE_R_OUT, :2] + p[_EYE_R_IN, :2]) / 2.0
    eye_l_centre = (p[_EYE_L_OUT, :2] + p[_EYE_L_IN, :2]) / 2.0
    eye_r_width = max(dist(_EYE_R_OUT, _EYE_R_IN), 1e-6)
    eye_l_width = max(dist(_EYE_L_OUT, _EYE_L_IN), 1e-6)
    gaze_r = (p[468, :2] - eye_r_centre) / eye_r_width
    gaze_l = (p[473, :2] - eye_l_centre) / eye_l_width
    row = [
        1.0, roll, p[1, 0], p[1, 1], p[234, 2] - p[454, 2],
        dist(13, 14), dist(0, 17), dist(61, 291), lip_centre_y - p[61, 1], lip_centre_y - p[291, 1],
        dist(159, 145) / eye_r_width, dist(386, 374) / eye_l_width,
        eye_r_centre[1] - p[105, 1], eye_l_centre[1] - p[334, 1],
        p[_EYE_R_IN, 1] - p[107, 1], p[_EYE_L_IN, 1] - p[336, 1],
        dist(107, 336), dist(1, 152), dist(1, 0), dist(98, 327), dist(145, 61), dist(374, 291),
        gaze_r[0], gaze_r[1], gaze_l[0], gaze_l[1],
    ]  # fmt: skip
    return np.asarray(row, dtype=np.float32)


class FaceMeshDescriber:
    """One FaceMesh graph (not thread-safe, so guarded by a lock) turning RGB frames into descriptor rows."""

    def __init__(self, *, min_detection_confidence: float = 0.5) -> None:
        import mediapipe as mp  # heavy import (~1 s): only when vision is actually needed

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True,
            max_num_faces=1,
            refine_landmarks=True,
            min_detection_confidence=min_detection_confidence,
        )
        self._lock = threading.Lock()

    def describe(self, rgb: np.ndarray) -> np.ndarray:
        """Descriptor row of one RGB uint8 [h, w, 3] frame; the "no face" row when none is found."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"frames must be RGB uint8 [h, w, 3], got {rgb.dtype} {rgb.shape}")
        with self._lock:
            result = self._mesh.process(np.ascontiguousarray(rgb))
        faces = result.multi_face_landmarks
        if not faces:
            return no_face_vision(1)[0]
        marks = np.array([(m.x, m.y, m.z) for m in faces[0].landmark], dtype=np.float64)
        return describe_landmarks(marks, rgb.shape[1], rgb.shape[0])

    def describe_frames(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """float32 [max(len(frames), 1), VISION_DIM]; a window without frames gets one "no face" row."""
        if not frames:
            return no_face_vision(1)
        return np.stack([self.describe(rgb) for rgb in frames])

    def close(self) -> None:
        with self._lock:
            self._mesh.close()
