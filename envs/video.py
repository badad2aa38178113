"""Writing rollout videos (mp4, H.264 through imageio's bundled ffmpeg)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def save_video(frames: list[np.ndarray], path: str | Path, fps: int = 10) -> Path:
    """Write (H, W, 3) uint8 RGB frames to `path` (.mp4); the file appears whole or not at all."""
    import imageio.v2 as imageio

    if not frames:
        raise ValueError(f"{path}: no frames to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        # macro_block_size=1: frame sizes that are not multiples of 16 are written as they are.
        with imageio.get_writer(tmp, fps=fps, codec="libx264", macro_block_size=1, quality=8) as writer:
            for frame in frames:
                writer.append_data(np.asarray(frame, dtype=np.uint8))
        # ffmpeg cut short (a full disk, a file size limit) leaves a truncated file without an error: read it back.
        try:
            with imageio.get_reader(tmp) as reader:
                written = reader.count_frames()
        except Exception as e:  # imageio raises various errors on a file it cannot parse
            reason = (str(e).strip().splitlines() or [type(e).__name__])[-1]
            raise VideoWriteError(f"{path}: the video could not be written whole (unreadable: {reason}); is the "
                                  "disk full?") from e
        if written != len(frames):
            raise VideoWriteError(f"{path}: the video could not be written whole ({written} of {len(frames)} "
                                  "frames); is the disk full?")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


class VideoWriteError(OSError):
    """A video that could not be written whole (the file is not left behind)."""
