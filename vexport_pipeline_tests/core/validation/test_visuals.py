"""The validation report's pictures: the contact sheet shows the rendition at its six times, found by seeking."""

import subprocess

import av
import numpy as np
import pytest

from vexport_pipeline.core.errors import ProcessingError
from vexport_pipeline.core.settings import ffmpeg_exe
from vexport_pipeline.core.validation.visuals import SHEET_TILES, contact_sheet, plot

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


@pytest.fixture(scope="module")
def bands(tmp_path_factory):
    """Six seconds, one flat colour a second, keyframes every 3 s (a thumbnail is decoded from the one before it)."""
    out = tmp_path_factory.mktemp("visuals") / "bands.mp4"
    inputs = [
        a for r, g, b in COLOURS for a in ("-f", "lavfi", "-i", f"color=c=0x{r:02x}{g:02x}{b:02x}:s=320x180:r=25:d=1")
    ]
    concat = "".join(f"[{k}:v]" for k in range(len(COLOURS))) + f"concat=n={len(COLOURS)}:v=1:a=0"
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *inputs, "-filter_complex", concat,
         "-c:v", "libx264", "-g", "75", "-pix_fmt", "yuv420p", str(out)],
        check=True,
    )  # fmt: skip
    return out


def _tiles(png, width=160, pad=2) -> list[np.ndarray]:
    with av.open(str(png)) as c:
        sheet = next(c.decode(video=0)).to_ndarray(format="rgb24")
    return [sheet[:, k * (width + pad) : k * (width + pad) + width] for k in range(SHEET_TILES)]


@pytest.mark.parametrize("container", ["mp4", "webm", "ts"])
def test_each_thumbnail_shows_its_own_time(bands, tmp_path, container):
    """As an MP4, a VP9 WebM, and an MPEG-TS whose timestamps start at 7.5 s: its seek compares decode timestamps,
    and aimed at a keyframe it landed after it, a GOP late or past the last keyframe ('no picture at 5.50 s')."""
    video = bands
    if container != "mp4":
        video = tmp_path / f"bands.{container}"
        codec = ["-c:v", "libvpx-vp9", "-crf", "40", "-b:v", "0"] if container == "webm" else ["-c", "copy"]
        offset = ["-output_ts_offset", "7.5"] if container == "ts" else []
        subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(bands), *codec, *offset, str(video)],
            check=True,
        )
    png = contact_sheet(video, tmp_path / "sheet.png", 6.0)
    tiles = _tiles(png)
    assert tiles[0].shape == (90, 160, 3)
    for tile, colour in zip(tiles, COLOURS):
        assert np.abs(tile.reshape(-1, 3).mean(axis=0) - colour).max() < 20, (tile.reshape(-1, 3).mean(axis=0), colour)


def test_a_duration_longer_than_the_picture_takes_the_last_frame(bands, tmp_path):
    """A container that states more than it holds: the times past the end show its last picture, not an error."""
    tiles = _tiles(contact_sheet(bands, tmp_path / "sheet.png", 12.0))
    assert np.abs(tiles[-1].reshape(-1, 3).mean(axis=0) - COLOURS[-1]).max() < 20


def test_an_unreadable_file_is_a_named_report_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 4096)
    with pytest.raises(ProcessingError, match="contact sheet failed") as err:
        contact_sheet(bad, tmp_path / "sheet.png", 4.0)
    assert err.value.code == "report_failed"


def test_the_plot_is_a_picture(bands, tmp_path):
    png = plot(bands, tmp_path / "plot.png", [(k / 25, 90.0) for k in range(150)], "bands")
    with av.open(str(png)) as c:
        frame = next(c.decode(video=0))
    assert (frame.width, frame.height) == (480, 192)
