"""The demo: a generated source with texture, motion and sound, and a composition for it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from vexport_pipeline.core.settings import current, ffmpeg_exe

DEMO_COMPOSITION = {
    "id": "demo",
    "source": "sample.mp4",
    "export_type": "combined",
    "segments": [{"start": 0.5, "end": 3.5}, {"start": "00:00:04.500", "end": 7.5}],
    "transitions": {"crossfade": 0.5},
    "targets": [
        {"preset": "web_720p", "quality": "low"},
        {"format": "webm", "video_codec": "vp9", "resolution": "720p", "quality": "low"},
        {"preset": "instagram_feed_square", "quality": "draft"},
    ],
    "delivery": {"link_ttl": "24h"},
}


def make_source(path: Path, seconds: float = 8.0, size: str = "1920x1080", rate: int = 25) -> Path:
    """A moving test pattern with grain and a tone; real enough to exercise the encoders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=s={size}:r={rate}:d={seconds},noise=alls=12:allf=t",
            "-f",
            "lavfi",
            "-i",
            f"sine=f=440:beep_factor=4:d={seconds}:r=48000",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "20",
            "-g",
            str(rate),
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-shortest",
            "-movflags",
            "+faststart",
            str(path),
        ],
        check=True,
    )
    return path


def make_demo(seconds: float = 8.0) -> Path:
    folder = current().paths.ensure().media / "demo"
    source = folder / "sample.mp4"
    if not source.exists():
        make_source(source, seconds)
    manifest = folder / "demo.yaml"
    manifest.write_text(yaml.safe_dump(DEMO_COMPOSITION, sort_keys=False))
    return manifest
