"""Real FFmpeg encodes through the media core, checked the way a user would: probe and decode."""
from pathlib import Path

import pytest

from vexport_pipeline.core.manifest import Target, parse_composition
from vexport_pipeline.core.presets import PresetBook
from vexport_pipeline.core.probe import count_frames, keyframe_times, probe
from vexport_pipeline.core.render import render_clip
from vexport_pipeline.core.timeline import Clip, build_timeline


def settings(info, *targets):
    book = PresetBook.load()
    return [book.resolve(Target(**t), info) for t in targets]


def test_ladder_mp4_and_webm_at_720p_and_1080p_in_one_process(media, tmp_path):
    info = probe(media["av"])
    ss = settings(info, {"format": "mp4", "resolution": "720p", "quality": "low"},
                  {"format": "mp4", "resolution": "1080p", "quality": "draft"},
                  {"format": "webm", "resolution": "720p", "quality": "low"},
                  {"format": "webm", "resolution": "1080p", "quality": "draft"})
    finals = [tmp_path / f"{i}.{s.ext}" for i, s in enumerate(ss)]
    done = render_clip(info, Clip(None, [(0.0, 2.0)]), ss, finals)
    assert done.argv.count("-i") == 1
    expected = [("mp4", "h264", "aac", 1280, 720), ("mp4", "h264", "aac", 1920, 1080),
                ("webm", "vp9", "opus", 1280, 720), ("webm", "vp9", "opus", 1920, 1080)]
    for path, (fmt, vc, ac, w, h) in zip(finals, expected):
        out = probe(path)
        assert fmt in out.format_name.split(",")
        assert out.video.codec == vc and out.audio.codec == ac
        assert (out.video.width, out.video.height) == (w, h)
        assert out.video.pix_fmt == "yuv420p" and out.video.fps == 25.0
        assert out.audio.sample_rate == 48000 and out.audio.channels == 2
        assert abs((out.video.duration or out.duration) - 2.0) <= 0.04 + 1e-6  # WebM has no per-stream duration
        frames, samples, errors = count_frames(path)
        assert errors == [] and frames == 50
        if fmt == "mp4":
            assert out.faststart is True
            assert out.video.profile == "High"
    assert not list(tmp_path.glob(".*partial*"))


def test_quality_tiers_order_file_sizes(media, tmp_path):
    info = probe(media["av"])
    ss = settings(info, *({"format": "mp4", "resolution": "720p", "quality": q} for q in ("low", "medium", "high")))
    finals = [tmp_path / f"{s.quality}.mp4" for s in ss]
    render_clip(info, Clip(None, [(0.0, 2.0)]), ss, finals)
    sizes = [p.stat().st_size for p in finals]
    assert sizes[0] < sizes[1] < sizes[2], sizes


@pytest.mark.parametrize("start,end,frames", [(0.0, 1.0, 25), (1.24, 2.0, 19), (3.0, 4.0, 25)])
def test_cuts_are_frame_accurate_including_the_very_start_and_end(media, tmp_path, start, end, frames):
    info = probe(media["av"])
    [s] = settings(info, {"format": "mp4", "resolution": "source", "quality": "draft"})
    out = tmp_path / "cut.mp4"
    render_clip(info, Clip(None, [(start, end)]), [s], [out])
    assert count_frames(out)[0] == frames
    assert abs(probe(out).video.duration - (end - start)) < 0.041


@pytest.mark.parametrize("export_type,segments,crossfade,expect", [
    ("single", [{"start": 0.5, "end": 1.5}], 0, [1.0]),
    ("combined", [{"start": 0, "end": 1}, {"start": 2, "end": 3}], 0, [2.0]),
    ("combined", [{"start": 0, "end": 1.2}, {"start": 2, "end": 3.2}], 0.4, [2.0]),
    ("clips", [{"start": 0, "end": 1, "clip_id": "a"}, {"start": 2, "end": 2.6}], 0, [1.0, 0.6]),
])
def test_each_export_type_renders_its_timeline(media, tmp_path, export_type, segments, crossfade, expect):
    info = probe(media["av"])
    data = {"source": "x.mp4", "export_type": export_type, "segments": segments, "targets": [{"preset": "web_720p", "quality": "draft"}]}
    if crossfade:
        data["transitions"] = {"crossfade": crossfade}
    comp = parse_composition(data)
    timeline = build_timeline(comp, info, keyframe_times(media["av"]))
    assert [c.duration for c in timeline.clips] == expect
    for clip in timeline.clips:
        ss = settings(info, {"preset": "web_720p", "quality": "draft"})
        out = tmp_path / f"{clip.clip_id or 'main'}.mp4"
        render_clip(info, clip, ss, [out])
        got = probe(out)
        assert abs(got.video.duration - clip.duration) <= 0.04 + 1e-6, (got.video.duration, clip.duration)
        assert got.audio is not None
    if export_type == "clips":
        assert [c.clip_id for c in timeline.clips] == ["a", "clip02"]


def test_source_without_audio_gives_video_only(media, tmp_path):
    info = probe(media["silent"])
    assert not info.has_audio
    ss = settings(info, {"preset": "web_720p", "quality": "draft"}, {"format": "webm", "resolution": "720p", "quality": "draft"})
    finals = [tmp_path / "a.mp4", tmp_path / "b.webm"]
    render_clip(info, Clip(None, [(0.0, 2.0)]), ss, finals)
    for p in finals:
        out = probe(p)
        assert out.audio is None and out.video is not None
        assert (out.video.width, out.video.height) == (960, 720)


def test_keyframes_are_found_by_demuxing(media):
    assert keyframe_times(media["av"])[:4] == [0.0, 1.0, 2.0, 3.0]


def test_loudness_normalization_reaches_the_target(media, tmp_path):
    from vexport_pipeline.core.validate import measure_loudness

    info = probe(media["av"])
    before = measure_loudness(media["av"])
    [s] = settings(info, {"preset": "web_720p", "quality": "draft"})
    out = tmp_path / "loud.mp4"
    render_clip(info, Clip(None, [(0.0, 4.0)]), [s], [out], loudness=(-16.0, -1.5))
    after = measure_loudness(out)
    assert abs(before["integrated_lufs"] - -16.0) > 3  # the source is far from the target
    assert abs(after["integrated_lufs"] - -16.0) <= 1.5, (before, after)
    assert after["true_peak_dbtp"] <= -1.0
    assert probe(out).audio.sample_rate == 48000


def test_cache_reuses_unchanged_renditions_and_misses_on_any_change(media, tmp_path):
    from vexport_pipeline.core.cache import RenditionCache
    from vexport_pipeline.core.render import sha256_file

    info = probe(media["av"])
    cache = RenditionCache(tmp_path / "cache")
    sha = sha256_file(media["av"])
    ss = settings(info, {"preset": "web_720p", "quality": "draft"}, {"format": "webm", "resolution": "320x180", "quality": "draft"})
    clip = Clip(None, [(0.0, 1.0)])
    first = render_clip(info, clip, ss, [tmp_path / "a1.mp4", tmp_path / "b1.webm"], cache=cache, source_sha256=sha)
    assert first.cached == [False, False] and first.argv
    again = render_clip(info, clip, ss, [tmp_path / "a2.mp4", tmp_path / "b2.webm"], cache=cache, source_sha256=sha)
    assert again.cached == [True, True] and again.argv == [] and again.wall_s == 0.0
    assert sha256_file(tmp_path / "a2.mp4") == sha256_file(tmp_path / "a1.mp4")
    changed = settings(info, {"preset": "web_720p", "quality": "low"}, {"format": "webm", "resolution": "320x180", "quality": "draft"})
    third = render_clip(info, clip, changed, [tmp_path / "a3.mp4", tmp_path / "b3.webm"], cache=cache, source_sha256=sha)
    assert third.cached == [False, True] and third.argv.count("-c:v") == 1  # only the changed target is encoded
    other_cut = render_clip(info, Clip(None, [(0.0, 1.2)]), ss[:1], [tmp_path / "a4.mp4"], cache=cache, source_sha256=sha)
    assert other_cut.cached == [False]
