"""The one rule that tells camera images from low-dim observations, used by the data, the tasks and the policies."""

from __future__ import annotations

from collections.abc import Sequence

IMAGE_CHANNELS = (1, 3, 4)


def is_image_shape(shape: Sequence[int]) -> bool:
    """Whether a per-step observation shape is a camera image: (H, W, C) with C in 1, 3 or 4 (stored as uint8).

    Everything else, e.g. (5,), (20,) or the (9, 2) keypoints of Push-T, is low-dim. For an array holding
    all the steps (N, ...), pass `array.shape[1:]`.
    """
    return len(shape) == 3 and int(shape[-1]) in IMAGE_CHANNELS
