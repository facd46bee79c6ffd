"""Seamless loops (`loop`): a video whose last frame flows into its first when a player repeats it.

- bounce: forward, then backward, without showing either end frame twice in a row:
  f0 .. f(F-1), f(F-2) .. f1, so 2F - 2 frames (the player's repeat goes f1 -> f0).
- crossfade: the last K frames are blended into the first K, and the video starts right after them:
  f(K) .. f(F-K-1), then blend(i) = (1 - a) f(F-K+i) + a f(i) with a = (i + 1) / (K + 1) for i < K, so F - K
  frames. The tail's motion runs on under the blend while the head fades in, and the repeat continues with
  f(K), the frame after the last blended head frame.
- motion: the animate stage sampled the video from both ends with its first frame as the end picture
  (hooks/ends.py), so its last frame comes back to the first by motion; the last frame is dropped (F - 1 frames),
  so the player's repeat goes f(F-2) -> f0 without showing that picture twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import OptionError, ref
from ..options import LOOPS
from . import Clip, PostStage, StageContext

if TYPE_CHECKING:
    import numpy as np


def loop_frame_count(mode: str, frames: int, blend: int) -> int:
    """Frames a loop of `frames` frames has (for `svd plan`, before any frame exists)."""
    return {"bounce": 2 * frames - 2, "crossfade": frames - blend, "motion": frames - 1}.get(mode, frames)


def check_loop(mode: str, frames: int, blend: int) -> None:
    """A crossfade needs frames to blend and frames between the blends; say so before any work starts."""
    if mode == "crossfade" and frames < 2 * blend + 1:
        raise OptionError(
            "loop_frames",
            blend,
            f"a crossfade over {blend} frames needs a video of at least {2 * blend + 1} frames, and this one has "
            f"{frames}: lower {ref('loop_frames')} or make more frames.",
            allowed=(1, max(1, (frames - 1) // 2)),
        )


def bounce(frames: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.concatenate([frames, frames[-2:0:-1]])


def crossfade(frames: np.ndarray, blend: int) -> np.ndarray:
    import numpy as np

    count = len(frames)
    check_loop("crossfade", count, blend)
    weights = (np.arange(1, blend + 1, dtype=np.float64) / (blend + 1))[:, None, None, None]
    tail = frames[count - blend :].astype(np.float64)
    head = frames[:blend].astype(np.float64)
    blended = np.clip(np.rint((1 - weights) * tail + weights * head), 0, 255).astype(np.uint8)
    return np.concatenate([frames[blend : count - blend], blended])


def loop_clip(clip: Clip, mode: str, blend: int) -> Clip:
    """The clip made to loop by `mode` (bounce, crossfade or motion); anything else returns it unchanged."""
    if mode not in LOOPS:
        return clip
    if mode == "motion":
        frames = clip.frames[:-1]  # the frame that came back to the first
    else:
        frames = bounce(clip.frames) if mode == "bounce" else crossfade(clip.frames, blend)
    record = {"stage": "loop", "mode": mode, "frames": int(len(frames))}
    if mode == "crossfade":
        record["loop_frames"] = blend
    return Clip(frames=frames, fps=clip.fps, stages=[*clip.stages, record], warnings=list(clip.warnings))


def _run(clip: Clip, context: StageContext) -> Clip:
    return loop_clip(clip, context.request.loop, context.request.loop_frames)


LOOP = PostStage("loop", wanted=lambda req: req.loop in LOOPS, run=_run,
                 frames_after=lambda frames, req: loop_frame_count(req.loop, frames, req.loop_frames))  # fmt: skip
