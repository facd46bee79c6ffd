"""The provenance watermark: the fixed 48-bit message Stability's reference scripts embed, in every frame.

Method: invisible-watermark's "dwtDct", exactly as its decoders read it (Stability's scripts/demo/detect.py and
`imwatermark.WatermarkDecoder`): the frame as uint8 BGR -> OpenCV's YUV -> the U plane's Haar LL band -> in each
4x4 block the coefficient of largest magnitude (after the first) is quantised with step 36 so that its remainder
says one bit; the 48 bits repeat over the blocks. We embed with the library's own block quantiser
(`EmbedMaxDct.encode_frame`) but put back only the change to the LL band: the library's encoder also swaps the
horizontal and vertical detail bands when it rebuilds the plane and lets uint8 values wrap around; no decoder
reads either, but they visibly damage textured frames (measured: PSNR 15 dB on a frame of noise and 35 dB on
examples/rocket.jpg, against 42 and 40.5 dB here, with the same or better survival through H.264).

Measured on this machine (our MP4 writer: H.264 CRF 18 yuv420p; 14-frame 1024x576 pans over the four example
photos, a smooth gradient, the tiny model's output at 448x256 and 1024x576; "bits" = of the 48 that match):
- marked, read back from the MP4: the message voted over the frames (majority per bit) 48 for all but
  examples/chelsea.png, 41 (its frames alone 32-48). The mark does not survive in examples/coffee.png (first
  frame 37, the predicted frames after it 27-29: H.264 flattens its chroma) nor in pure random noise (vote 25).
- unmarked: 240 crops, flips and sizes of the example photos 16-32 bits (mean 23); unmarked videos vote 21-30.
  Stability's own test found no real image above 35 among 10,000.
So a video (or a frame) carries the mark from 37 bits: 5 above the most any unmarked picture reached, 4 below the
weakest surviving mark; 37 or more of 48 random bits match by chance once in 9,000.
- GIF keeps the mark about as well as MP4 (votes 41-48; coffee 34); WebM (VP9 CRF 30) loses it (votes 21-31 for
  the photos and the gradient, 37 for the tiny model's output).
- PSNR of marked against unmarked frames: 40.5-43.5 dB. Time per 1024x576 frame on one core: embedding about
  60 ms, reading about 40 ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError
from ..io.video import read_frames
from ..progress import NullProgress, Progress
from . import Clip, PostStage, StageContext

MESSAGE = 0xB3EC907BB19E  # Stability's fixed message, chosen at random by them; detectors look for it
BITS = tuple(int(bit) for bit in f"{MESSAGE:048b}")
METHOD = "dwtDct"
STEP = 36  # the quantisation step of invisible-watermark's dwtDct; its decoders assume it
BLOCK = 4
MIN_PIXELS = 256 * 256  # invisible-watermark refuses smaller frames (area, not each side)
MATCH = 37  # bits of 48: a frame, or the message voted over a video's frames, carries the mark from here


def too_small(width: int, height: int) -> str | None:
    """Why frames of this size cannot carry the mark, or None when they can."""
    if width * height >= MIN_PIXELS:
        return None
    return f"frames of {width}x{height} are too small to carry the watermark, which needs {MIN_PIXELS:,} pixels a frame"


def watermark_clip(clip: Clip, progress: Progress | None = None) -> Clip:
    """The clip with the mark in every frame, so anyone can tell the video was generated (the default)."""
    record = {"stage": "watermark", "method": METHOD, "message": f"0x{MESSAGE:012x}", "bits": len(BITS)}
    reason = too_small(clip.width, clip.height)
    if reason is not None:  # a picture too small to hold 48 bits: written unmarked, and the record says why
        record |= {"applied": False, "reason": reason}
        return Clip(clip.frames, clip.fps, [*clip.stages, record], list(clip.warnings))
    progress = progress or NullProgress()
    progress.start("watermark", len(clip.frames))
    marked = np.empty_like(clip.frames)
    for i, frame in enumerate(clip.frames):
        marked[i] = embed_frame(frame)
        progress.advance()
    progress.end()
    return Clip(marked, clip.fps, [*clip.stages, record | {"applied": True}], list(clip.warnings))


def embed_frame(frame: np.ndarray) -> np.ndarray:
    """One uint8 RGB frame with the message in its U plane's LL band, the rest of the picture untouched."""
    import cv2
    from imwatermark.maxDct import EmbedMaxDct

    height, width = frame.shape[0] // 4 * 4, frame.shape[1] // 4 * 4  # the part the decoders read
    ll = _u_band(frame[:height, :width])
    quantised = ll.copy()
    EmbedMaxDct(list(BITS), wmLen=len(BITS), scales=[0, STEP, STEP], block=BLOCK).encode_frame(quantised, STEP)
    du = np.repeat(np.repeat((quantised - ll) / 2, 2, axis=0), 2, axis=1)  # inverse Haar of the LL change alone
    # What a change of U alone does to B, G, R (OpenCV's float YUV is centred on 0.5).
    dyuv = np.stack([np.zeros_like(du), du + 0.5, np.full_like(du, 0.5)], axis=-1).astype(np.float32)
    drgb = cv2.cvtColor(dyuv, cv2.COLOR_YUV2BGR)[..., ::-1]
    out = frame.astype(np.float32)
    out[:height, :width] += drgb
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _u_band(frame: np.ndarray) -> np.ndarray:
    """The U plane's Haar LL band computed exactly as the decoders do: they break ties between equal coefficients by
    position, so even a rounding difference in the last bit (numpy's sums against PyWavelets') changes bits read."""
    import cv2
    import pywt

    u = cv2.cvtColor(np.ascontiguousarray(frame[..., ::-1]), cv2.COLOR_BGR2YUV)[..., 1]
    return pywt.dwt2(u, "haar")[0]


def frame_bits(frame: np.ndarray) -> np.ndarray:
    """The 48 bits a detector reads from one uint8 RGB frame (invisible-watermark's decoder, on BGR)."""
    from imwatermark import WatermarkDecoder

    bits = WatermarkDecoder("bits", len(BITS)).decode(np.ascontiguousarray(frame[..., ::-1]), METHOD)
    return np.asarray(bits, dtype=bool)


@dataclass
class WatermarkReport:
    """What `read_watermark` found in one video."""

    path: Path
    frames: int
    frames_marked: int  # frames that alone match at least MATCH bits
    bit_accuracy: float  # mean fraction of the 48 bits matching, over the frames (0.5 is chance); NaN if unread
    message_match: int  # bits of the message voted over all frames (majority per bit) that match
    carries: bool
    reason: str | None = None  # why the video could not carry the mark at all (frames too small)

    def as_dict(self) -> dict:
        accuracy = None if math.isnan(self.bit_accuracy) else round(self.bit_accuracy, 4)
        return {"path": str(self.path), "carries": self.carries, "frames": self.frames,
                "frames_marked": self.frames_marked, "bit_accuracy": accuracy, "message_match": self.message_match,
                "message_bits": len(BITS), "reason": self.reason}  # fmt: skip


def read_watermark(path: Path | str) -> WatermarkReport:
    """Whether a written video (MP4, WebM, GIF or a folder of PNG frames) carries the mark, read back as decoded."""
    path = Path(path)
    expected = np.asarray(BITS, dtype=bool)
    count, marked, matched, votes = 0, 0, 0, np.zeros(len(BITS))
    size = None
    for frame in read_frames(path):
        if size is None:
            size = frame.shape[:2]
            if (reason := too_small(frame.shape[1], frame.shape[0])) is not None:
                return WatermarkReport(path, _count_rest(path), 0, math.nan, 0, False, reason)
        elif frame.shape[:2] != size:
            raise UsageError(f"{path} holds frames of different sizes; give one video, or one folder of its frames.",
                             path=path)  # fmt: skip
        bits = frame_bits(frame)
        hits = int(np.sum(bits == expected))
        count, marked, matched, votes = count + 1, marked + (hits >= MATCH), matched + hits, votes + bits
    message_match = int(np.sum((votes > count / 2) == expected))
    return WatermarkReport(path, count, marked, matched / (count * len(BITS)), message_match, message_match >= MATCH)


def _count_rest(path: Path) -> int:
    return sum(1 for _ in read_frames(path))


def _run(clip: Clip, context: StageContext) -> Clip:
    clip = watermark_clip(clip, context.progress)
    if not clip.stages[-1]["applied"]:
        context.progress.note(f"Note: {clip.stages[-1]['reason']}; written without it")
    return clip


WATERMARK = PostStage("watermark", wanted=lambda req: bool(req.watermark), run=_run)
