"""Sample content like users' content, generated on the spot: screen recordings with text, photographs
in motion (pan and zoom over the photographs scikit-image ships), film grain, dark low-contrast scenes,
fast motion and flat-colour animation. Tests, benchmarks and calibration run on these rather than on
FFmpeg's test patterns, which flatter every encoder.

Frames are drawn with NumPy and Pillow and piped raw into FFmpeg, which encodes a near-lossless H.264
source (CRF 16) with a tone and noise bed as audio.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np

from vexport_pipeline.core.errors import ProcessingError
from vexport_pipeline.core.settings import ffmpeg_exe

KINDS = ("screen", "photo", "grain", "dark", "fast", "flat")
Frames = Callable[[int, int, int, int, np.random.Generator], Iterator[np.ndarray]]


@lru_cache(maxsize=1)
def _collage() -> np.ndarray:
    """A 2400x1600 canvas of the colour photographs bundled with scikit-image (no download)."""
    from PIL import Image
    from skimage import data

    canvas = Image.new("RGB", (2400, 1600))
    tiles = [
        (data.retina, (0, 0, 900, 900)),
        (data.hubble_deep_field, (900, 0, 1700, 700)),
        (data.coffee, (1700, 0, 2400, 700)),
        (data.rocket, (900, 700, 1700, 1250)),
        (data.astronaut, (1700, 700, 2400, 1400)),
        (data.chelsea, (0, 900, 900, 1600)),
        (data.immunohistochemistry, (900, 1250, 1700, 1600)),
        (data.coffee, (1700, 1400, 2400, 1600)),
    ]
    for load, (x0, y0, x1, y1) in tiles:
        im = Image.fromarray(load()).convert("RGB")
        w, h = x1 - x0, y1 - y0
        scale = max(w / im.width, h / im.height)  # cover the tile, then crop its centre
        im = im.resize((math.ceil(im.width * scale), math.ceil(im.height * scale)), Image.Resampling.LANCZOS)
        left, top = (im.width - w) // 2, (im.height - h) // 2
        canvas.paste(im.crop((left, top, left + w, top + h)), (x0, y0))
    return np.asarray(canvas)


def _camera(
    w: int, h: int, n: int, *, speed: float, zoom: float, start: tuple[float, float] = (200, 150)
) -> Iterator[np.ndarray]:
    """A moving window over the collage: a pan (`speed` px per frame at 1080p) with a slow zoom."""
    from PIL import Image

    src = Image.fromarray(_collage())
    for i in range(n):
        z = 1.0 + zoom * i / max(1, n - 1)
        cw, ch = 1600 / z, 900 / z  # the window at 1080p-equivalent scale
        x = (start[0] + speed * i) % (src.width - cw)
        y = min(src.height - ch, start[1] + 120 * math.sin(i / 40))
        box = (x, y, x + cw, y + ch)
        yield np.asarray(src.resize((w, h), Image.Resampling.BICUBIC, box=box))


def _photo(w, h, n, rate, rng):
    yield from _camera(w, h, n, speed=3.0, zoom=0.15)


def _grain(w, h, n, rate, rng):
    from PIL import Image

    for frame in _camera(w, h, n, speed=2.0, zoom=0.1, start=(700, 500)):
        # luminance grain, new every frame, with film's softness: drawn at half size and scaled up
        small = rng.normal(0.0, 9.0, (h // 2, w // 2)).astype(np.float32)
        noise = np.asarray(Image.fromarray(small, mode="F").resize((w, h), Image.Resampling.BILINEAR))
        yield np.clip(frame + noise[..., None], 0, 255).astype(np.uint8)


def _dark(w, h, n, rate, rng):
    for frame in _camera(w, h, n, speed=1.5, zoom=0.05, start=(1100, 300)):
        noise = rng.normal(0.0, 2.0, (h // 2, w // 2, 1)).repeat(2, 0).repeat(2, 1)  # sensor noise
        low = frame.astype(np.float32) * 0.22 + 10
        low[: noise.shape[0], : noise.shape[1]] += noise
        yield np.clip(low, 0, 255).astype(np.uint8)


def _fast(w, h, n, rate, rng):
    yield from _camera(w, h, n, speed=45.0, zoom=0.4, start=(0, 600))


def _screen(w, h, n, rate, rng):
    """A code editor scrolling under a moving cursor, with a sidebar and a title bar."""
    from PIL import Image, ImageDraw, ImageFont

    scale = h / 1080
    font = ImageFont.load_default(size=max(10, round(26 * scale)))
    line_h = max(12, round(34 * scale))
    words = ["def", "return", "export", "render", "(self,", "targets)", "=", "None", "for", "clip", "in", "# keep"]
    lines = [
        " " * (4 * int(rng.integers(0, 4))) + " ".join(rng.choice(words, int(rng.integers(2, 8)))) for _ in range(400)
    ]
    for i in range(n):
        im = Image.new("RGB", (w, h), (30, 31, 36))
        d = ImageDraw.Draw(im)
        d.rectangle((0, 0, w, round(48 * scale)), fill=(58, 60, 68))
        d.text((round(20 * scale), round(10 * scale)), "vexport - main.py", font=font, fill=(220, 220, 220))
        d.rectangle((0, round(48 * scale), round(300 * scale), h), fill=(40, 42, 48))
        for k in range(12):
            d.text((round(20 * scale), round((70 + 40 * k) * scale)), f"module_{k}.py", font=font, fill=(170, 180, 190))
        first = i * 6 // rate  # scrolls a few lines a second
        for row in range(h // line_h):
            colour = (120, 200, 120) if "#" in lines[first + row] else (210, 210, 200)
            d.text((round(330 * scale), round(60 * scale) + row * line_h), lines[first + row], font=font, fill=colour)
        cx = round(330 * scale) + (i * 7) % round(600 * scale)
        d.rectangle((cx, round(300 * scale), cx + 2, round(300 * scale) + line_h), fill=(255, 255, 255))
        yield np.asarray(im)


def _flat(w, h, n, rate, rng):
    """Flat-colour motion graphics: hard-edged shapes bouncing over a plain background."""
    from PIL import Image, ImageDraw

    shapes = [
        (
            rng.uniform(0, w),
            rng.uniform(0, h),
            rng.uniform(-12, 12),
            rng.uniform(-9, 9),
            tuple(int(c) for c in rng.integers(40, 255, 3)),
            rng.uniform(0.05, 0.2) * h,
        )
        for _ in range(9)
    ]
    for i in range(n):
        im = Image.new("RGB", (w, h), (245, 220, 120))
        d = ImageDraw.Draw(im)
        for k, (x, y, vx, vy, colour, r) in enumerate(shapes):
            px, py = (x + vx * i) % w, (y + vy * i) % h
            box = (px - r, py - r, px + r, py + r)
            (d.ellipse if k % 2 else d.rectangle)(box, fill=colour)
        yield np.asarray(im)


GENERATORS: dict[str, Frames] = {
    "screen": _screen,
    "photo": _photo,
    "grain": _grain,
    "dark": _dark,
    "fast": _fast,
    "flat": _flat,
}


def _argv(path: Path, w: int, h: int, seconds: float, rate: int, audio: bool) -> list[str]:
    argv = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    argv += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(rate), "-i", "pipe:0"]
    if audio:
        argv += ["-f", "lavfi", "-i", f"sine=f=330:beep_factor=3:d={seconds}:r=48000,volume=0.3"]
        argv += ["-f", "lavfi", "-i", f"anoisesrc=c=pink:a=0.03:d={seconds}:r=48000"]
        argv += ["-filter_complex", "[1:a][2:a]amix=inputs=2:normalize=0[a]", "-map", "0:v", "-map", "[a]"]
        argv += ["-c:a", "aac", "-b:a", "192k"]
    argv += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "16", "-g", str(rate), "-pix_fmt", "yuv420p"]
    argv += ["-vf", "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv"]  # tagged BT.709
    return argv + ["-movflags", "+faststart", "-t", f"{seconds}", str(path)]


def make_sample(
    kind: str,
    path: Path,
    *,
    size: tuple[int, int] = (1920, 1080),
    seconds: float = 2.0,
    rate: int = 25,
    audio: bool = True,
    seed: int = 0,
) -> Path:
    """Write one sample clip of `kind` (see KINDS) to `path` (MP4, H.264 CRF 16, AAC)."""
    if kind not in GENERATORS:
        raise ProcessingError(f"unknown sample kind {kind!r}; one of {', '.join(KINDS)}", code="sample_unknown")
    w, h = size
    n = max(1, round(seconds * rate))
    path.parent.mkdir(parents=True, exist_ok=True)
    argv = _argv(path, w, h, seconds, rate, audio)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for frame in GENERATORS[kind](w, h, n, rate, np.random.default_rng(seed)):
            proc.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        proc.stdin.close()
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait(timeout=600) != 0:
            raise ProcessingError(f"FFmpeg could not write the {kind} sample: {err.strip()}", where=str(path))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return path
