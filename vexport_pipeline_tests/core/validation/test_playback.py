"""Real-client playback in Debian's headless Chromium (Playwright with executable_path)."""

import os

import pytest

from vexport_pipeline.core.media.probe import probe
from vexport_pipeline.core.media.render import render_clip
from vexport_pipeline.core.media.timeline import Clip
from vexport_pipeline.core.spec.composition import Target
from vexport_pipeline.core.spec.presets import PresetBook
from vexport_pipeline.core.validation.playback import chromium, play, playback_issues

if not chromium() and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed (make test installs it as root)", allow_module_level=True)


@pytest.fixture(scope="module")
def renders(media, tmp_path_factory):
    d = tmp_path_factory.mktemp("play")
    info = probe(media["av"])
    book = PresetBook.load()
    ss = [
        book.resolve(Target(**t), info)
        for t in (
            {"preset": "web_720p", "quality": "draft"},
            {"format": "webm", "video_codec": "vp9", "resolution": "640x360", "quality": "draft"},
            {"format": "mp4", "video_codec": "h265", "resolution": "640x360", "quality": "draft"},
        )
    ]
    outs = [d / "web.mp4", d / "web.webm", d / "hevc.mp4"]
    render_clip(info, Clip(None, [(0.0, 2.0)]), ss, outs)
    return outs


def test_web_targets_play_at_their_size_and_duration(renders):
    mp4, webm, _ = renders
    for seen, (w, h) in zip(play([mp4, webm]), [(1280, 720), (640, 360)]):
        assert seen.get("error") is None, seen
        assert playback_issues(seen, w, h, 2.0, 0.04) == [], seen
        assert seen["frames"] > 0 and seen["played"] > 0.2


def test_a_file_chromium_cannot_play_is_reported(renders, tmp_path):
    _, _, hevc = renders
    [seen] = play([hevc])  # Debian's chromium has no HEVC decoder
    assert playback_issues(seen, 640, 360, 2.0, 0.04)[0][0] in ("playback_failed", "playback_size", "playback_stalled")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(renders[0].read_bytes()[:2000])
    [seen] = play([broken])
    assert playback_issues(seen, 1280, 720, 2.0, 0.04)[0][0] == "playback_failed"
