"""What a rendition is measured against: the encode's own input.

The encode controls only its encoding loss, so quality is judged against the source timeline brought
to the rendition's size and rate by the same filter chain the encode used (same scaler, same fit): a
lossless encode would score the maximum. A crop compares the same region; pad and blur compare the
picture area only (bars and blurred fill are not picture). A full-reference figure against the source
at its own size is reported beside it, as information.
"""

from __future__ import annotations

import math

from vexport_pipeline.core.media.commands import video_chain
from vexport_pipeline.core.spec.presets import EncodeSettings

VMAF_MODEL = "vmaf_v0.6.1"
VMAF_4K_MODEL = "vmaf_4k_v0.6.1"  # for 2160p and above; scores of different models are not comparable


def model_for(s: EncodeSettings) -> str:
    return VMAF_4K_MODEL if min(s.width, s.height) >= 2160 else VMAF_MODEL


def same_picture(source_size: tuple[int, int], s: EncodeSettings) -> bool:
    """The rendition shows the whole source picture and nothing else (no crop, bars or fill)."""
    sw, sh = source_size
    return abs(sw * s.height - sh * s.width) <= max(sw, sh)


def picture_box(source_size: tuple[int, int], s: EncodeSettings) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the source picture inside the rendition's frame: the whole frame unless the fit
    pads or blurs the sides (the same arithmetic as FFmpeg's scale with force_original_aspect_ratio=decrease
    and force_divisible_by=2, centred as the pad and overlay filters place it)."""
    sw, sh = source_size
    w, h = s.width, s.height
    if same_picture(source_size, s) or s.fit == "crop":
        return 0, 0, w, h
    pw, ph = min(w, _near(h * sw / sh)), min(h, _near(w * sh / sw))
    pw, ph = _near(pw / 2) * 2, _near(ph / 2) * 2  # FFmpeg rounds to the nearest even size, halves up
    return (w - pw) // 2, (h - ph) // 2, pw, ph


def _near(x: float) -> int:
    return math.floor(x + 0.5)


def scaled_reference(stream, s: EncodeSettings, source_size: tuple[int, int]):
    """The source timeline as the encode saw it: same fps, fit and scaler, cropped to the picture area."""
    x, y, w, h = picture_box(source_size, s)
    ref = on_frame_grid(video_chain(stream, s, source_size), s)
    if (w, h) != (s.width, s.height):
        ref = ref.filter("crop", w, h, x, y)
    return as_sdr_tv(ref)


def as_sdr_tv(stream):
    """The same colour metadata on both inputs of a metric: otherwise FFmpeg converts one side's range
    on the way in (an untagged source against a tagged rendition scored 54 instead of 99)."""
    return stream.filter("format", "yuv420p").filter(
        "setparams", color_primaries="bt709", color_trc="bt709", colorspace="bt709", range="tv"
    )


def on_frame_grid(stream, s: EncodeSettings):
    """Timestamps from zero, counted in frames of the rendition's rate: libvmaf pairs the two inputs' frames by
    timestamp, and WebM stores milliseconds, so at 30 fps every third frame (33 ms, short of 33.3) was paired with
    the picture before it and a clean VP9 file scored 75 (at 25 fps, 40 ms is exact)."""
    return stream.filter("setpts", "PTS-STARTPTS").filter("settb", f"1/({s.fps})")


def rendition_picture(stream, s: EncodeSettings, source_size: tuple[int, int]):
    """The rendition's picture area, timestamps from zero on the frame grid, in the pixel format VMAF reads."""
    x, y, w, h = picture_box(source_size, s)
    out = on_frame_grid(stream, s)
    if (w, h) != (s.width, s.height):
        out = out.filter("crop", w, h, x, y)
    return as_sdr_tv(out)
