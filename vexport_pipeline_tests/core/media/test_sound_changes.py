"""A source whose sound changes format mid-stream (a broadcast recording across programmes)."""

import av
import numpy as np
import pytest

from vexport_pipeline.core.media.conform import (
    MAX_CHANGES,
    SoundFormat,
    changes_within,
    conform,
    conformed_copy,
    continuation,
    sound_formats,
)
from vexport_pipeline.core.media.probe import count_frames, probe
from vexport_pipeline.core.media.render import render_clip
from vexport_pipeline.core.media.timeline import Clip
from vexport_pipeline.core.settings import ffmpeg_exe
from vexport_pipeline.core.spec.composition import Target
from vexport_pipeline.core.spec.presets import PresetBook
from vexport_pipeline_tests.conftest import ffmpeg_make, make_clip, sound_change_ts, tone_hz


def _sound(path) -> tuple[np.ndarray, int]:
    """The first channel of the file's sound, and its rate."""
    with av.open(str(path)) as c:
        frames = list(c.decode(audio=0))
    return np.concatenate([f.to_ndarray()[0].astype(float) for f in frames]), frames[0].sample_rate


@pytest.fixture(scope="module")
def changing(tmp_path_factory):
    return sound_change_ts(tmp_path_factory.mktemp("sound") / "changes.ts")


def test_the_changes_are_found_and_a_steady_file_has_none(changing, media):
    found = sound_formats(probe(changing))
    assert [(f.sample_rate, f.layout) for f in found] == [(48000, "stereo"), (44100, "5.1")]
    assert found[1].at == pytest.approx(2.0, abs=0.05) and str(found[1]) == "5.1 44.1 kHz"
    steady = make_clip(changing.with_name("steady.ts"), extra_v=("-f", "mpegts"))
    assert [str(f) for f in sound_formats(probe(steady))] == ["mono 48 kHz"]
    assert sound_formats(probe(media["av"])) == []  # MP4: one format a track, nothing to read


def test_a_conformed_source_exports_whole_with_both_programmes_sound(changing, tmp_path):
    """Read as it is, FFmpeg rebuilt the filter graph at the change and restarted every segment's clock: 2 s of 4
    came out and validation failed. Conformed, the export has both tones where they were, in sync."""
    out = tmp_path / "conformed.ts"
    conform(ffmpeg_exe(), probe(changing), out)
    info = probe(out)
    assert [str(f) for f in sound_formats(info)] == ["stereo 48 kHz"]
    assert info.duration == pytest.approx(4.0, abs=0.05)
    s = PresetBook.load().resolve(Target(preset="web_720p", quality="draft"), info)
    path = tmp_path / "out.mp4"
    render_clip(info, Clip(None, [(0.0, info.duration)]), [s], [path])
    got = probe(path)
    assert got.video.duration == pytest.approx(4.0, abs=0.041) and count_frames(path)[0] >= 99
    assert got.audio.duration == pytest.approx(4.0, abs=0.05)
    assert (got.audio.channels, got.audio.sample_rate) == (2, 48000)
    sound, rate = _sound(path)
    assert tone_hz(sound[int(0.5 * rate) : int(1.5 * rate)], rate) == pytest.approx(440, abs=5)
    assert tone_hz(sound[int(2.5 * rate) : int(3.5 * rate)], rate) == pytest.approx(660, abs=5)


def test_only_a_change_within_the_clip_asks_for_a_copy():
    formats = [SoundFormat(0.0, 48000, "stereo"), SoundFormat(600.0, 44100, "5.1")]
    assert changes_within(formats, [(590.0, 610.0)]) and changes_within(formats, [(0.0, 599.5)])  # FFmpeg reads on
    assert not changes_within(formats, [(0.0, 300.0), (700.0, 800.0)]) and not changes_within(formats[:1], [(0, 1e4)])


def test_a_recording_that_breaks_off_keeps_the_formats_read_up_to_there(changing, tmp_path):
    """Half of the file, cut mid-packet, then noise: what was read is kept, and nothing is raised (a source that
    exported before must not fail at intake for this check)."""
    data = changing.read_bytes()
    broken = tmp_path / "broken.ts"
    broken.write_bytes(data[: len(data) // 2 + 77] + bytes(range(256)) * 64)
    found = sound_formats(probe(broken))
    assert [str(f) for f in found][:1] == ["stereo 48 kHz"]


def test_a_sound_that_changes_all_the_time_is_read_only_so_far_and_conformed(tmp_path):
    """Damaged or hostile: the format flips every 0.2 s, 19 changes in 4 s. The scan stops after MAX_CHANGES (the
    run's log and metadata stay short) and the copy is made, wherever the clip is."""
    parts = [
        ffmpeg_make(
            tmp_path / f"{k}.ts",
            *("-f", "lavfi", "-i", f"sine=f=440:r={48000 if k % 2 else 44100}:d=0.2"),
            *("-f", "lavfi", "-i", "testsrc2=s=320x180:r=25:d=0.2", "-ac", str(1 + k % 2)),
            *("-c:a", "aac", "-c:v", "libx264", "-preset", "ultrafast", "-output_ts_offset", f"{0.2 * k:.1f}"),
            *("-f", "mpegts"),
        )
        for k in range(20)
    ]
    src = tmp_path / "flips.ts"
    src.write_bytes(b"".join(p.read_bytes() for p in parts))
    found = sound_formats(probe(src))
    assert len(found) == MAX_CHANGES + 1 and changes_within(found, [(3.9, 4.0)])
    copy = conformed_copy(probe(src), [(3.5, 4.0)], tmp_path)
    assert copy and str(copy).endswith(" and on): read as stereo 48 kHz") and len(str(copy)) < 600
    assert [str(f) for f in sound_formats(copy.info)] == ["stereo 48 kHz"]


def test_a_sound_that_moves_to_another_stream_is_followed_there(tmp_path):
    """At a programme boundary a broadcaster may move the sound to a new stream (PID 0x101, then 0x102): the used
    track stopped at 2 s and the rest of the export was silent ("silence from 2.02 s"). The track that takes over is
    joined on at its own time, and a track that runs beside the used one (another language) never is."""
    parts = [
        ffmpeg_make(
            tmp_path / f"{k}.ts",
            *("-f", "lavfi", "-i", "testsrc2=s=320x180:r=25:d=2", "-f", "lavfi", "-i", f"sine=f={tone}:d=2"),
            *("-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-c:a", "aac", "-streamid", f"1:{pid}"),
            *("-output_ts_offset", str(2 * k), "-f", "mpegts"),
        )
        for k, (tone, pid) in enumerate([(440, 0x101), (660, 0x102)])
    ]
    src = tmp_path / "moves.ts"
    src.write_bytes(b"".join(p.read_bytes() for p in parts))
    info = probe(src)
    chain = continuation(info)
    assert [c.track for c in chain] == [0, 1] and chain[1].start == pytest.approx(chain[0].start + 2.0, abs=0.05)
    copy = conformed_copy(info, [(0.0, 4.0)], tmp_path)
    assert copy and "moves to another stream (audio track 2 at 1.9" in str(copy)
    info = copy.info
    s = PresetBook.load().resolve(Target(preset="web_720p", quality="draft"), info)
    path = tmp_path / "out.mp4"
    render_clip(info, Clip(None, [(0.0, info.duration)]), [s], [path])
    sound, rate = _sound(path)
    assert len(sound) / rate == pytest.approx(4.0, abs=0.05)
    for second, tone in enumerate([440, 440, 660, 660]):  # each second of the export, at its source's tone
        window = sound[int((second + 0.1) * rate) : int((second + 0.9) * rate)]
        assert np.abs(window).max() > 0.05 and tone_hz(window, rate) == pytest.approx(tone, abs=5), second
    assert continuation(probe(make_clip(tmp_path / "steady.ts", extra_v=("-f", "mpegts")))) == []
