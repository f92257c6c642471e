"""Real FFmpeg encodes through the media core, checked the way a user would: probe and decode."""

import pytest

from vexport_pipeline.core.media.probe import count_frames, keyframe_times, probe
from vexport_pipeline.core.media.render import render_clip
from vexport_pipeline.core.media.timeline import Clip, build_timeline
from vexport_pipeline.core.spec.composition import Target
from vexport_pipeline.core.spec.loading import parse_composition
from vexport_pipeline.core.spec.presets import PresetBook


def settings(info, *targets):
    book = PresetBook.load()
    return [book.resolve(Target(**t), info) for t in targets]


def test_ladder_mp4_and_webm_at_720p_and_1080p_in_one_process(media, tmp_path):
    info = probe(media["av"])
    ss = settings(
        info,
        {"format": "mp4", "resolution": "720p", "quality": "low"},
        {"format": "mp4", "resolution": "1080p", "quality": "draft"},
        {"format": "webm", "resolution": "720p", "quality": "low"},
        {"format": "webm", "resolution": "1080p", "quality": "draft"},
    )
    finals = [tmp_path / f"{i}.{s.ext}" for i, s in enumerate(ss)]
    done = render_clip(info, Clip(None, [(0.0, 2.0)]), ss, finals)
    assert done.argv.count("-i") == 1
    expected = [
        ("mp4", "h264", "aac", 1280, 720),
        ("mp4", "h264", "aac", 1920, 1080),
        ("webm", "vp9", "opus", 1280, 720),
        ("webm", "vp9", "opus", 1920, 1080),
    ]
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


@pytest.mark.parametrize(
    "export_type,segments,crossfade,expect",
    [
        ("single", [{"start": 0.5, "end": 1.5}], 0, [1.0]),
        ("combined", [{"start": 0, "end": 1}, {"start": 2, "end": 3}], 0, [2.0]),
        ("combined", [{"start": 0, "end": 1.2}, {"start": 2, "end": 3.2}], 0.4, [2.0]),
        ("clips", [{"start": 0, "end": 1, "clip_id": "a"}, {"start": 2, "end": 2.6}], 0, [1.0, 0.6]),
    ],
)
def test_each_export_type_renders_its_timeline(media, tmp_path, export_type, segments, crossfade, expect):
    info = probe(media["av"])
    data = {
        "source": "x.mp4",
        "export_type": export_type,
        "segments": segments,
        "targets": [{"preset": "web_720p", "quality": "draft"}],
    }
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
    ss = settings(
        info, {"preset": "web_720p", "quality": "draft"}, {"format": "webm", "resolution": "720p", "quality": "draft"}
    )
    finals = [tmp_path / "a.mp4", tmp_path / "b.webm"]
    render_clip(info, Clip(None, [(0.0, 2.0)]), ss, finals)
    for p in finals:
        out = probe(p)
        assert out.audio is None and out.video is not None
        assert (out.video.width, out.video.height) == (960, 720)


def test_keyframes_are_found_by_demuxing(media):
    assert keyframe_times(media["av"])[:4] == [0.0, 1.0, 2.0, 3.0]


def test_loudness_normalization_reaches_the_target(media, tmp_path):
    from vexport_pipeline.core.validation.analyze import analyze

    def measure_loudness(path):
        found = analyze(path)
        return {"integrated_lufs": found.integrated_lufs, "true_peak_dbtp": found.true_peak_dbtp}

    info = probe(media["av"])
    before = measure_loudness(media["av"])
    [s] = settings(info, {"preset": "web_720p", "quality": "draft"})
    out = tmp_path / "loud.mp4"
    done = render_clip(info, Clip(None, [(0.0, 4.0)]), [s], [out], loudness=(-16.0, -1.5))
    after = measure_loudness(out)
    assert done.loudness["mode"] == "linear" and done.loudness["measured_i"] == pytest.approx(
        before["integrated_lufs"], abs=0.5
    )
    assert abs(before["integrated_lufs"] - -16.0) > 3  # the source is far from the target
    assert abs(after["integrated_lufs"] - -16.0) <= 1.0, (before, after)  # two-pass: within EBU R128's 1 LU
    assert after["true_peak_dbtp"] <= -1.0
    assert probe(out).audio.sample_rate == 48000


def test_cache_reuses_unchanged_renditions_and_misses_on_any_change(media, tmp_path, monkeypatch):
    from vexport_pipeline.core.files import sha256_file
    from vexport_pipeline.core.media import cache as cache_module
    from vexport_pipeline.core.media.cache import RenditionCache

    info = probe(media["av"])
    cache = RenditionCache(tmp_path / "cache")
    sha = sha256_file(media["av"])
    ss = settings(
        info,
        {"preset": "web_720p", "quality": "draft"},
        {"format": "webm", "resolution": "320x180", "quality": "draft"},
    )
    clip = Clip(None, [(0.0, 1.0)])
    first = render_clip(info, clip, ss, [tmp_path / "a1.mp4", tmp_path / "b1.webm"], cache=cache, source_sha256=sha)
    assert first.cached == [False, False] and first.argv
    again = render_clip(info, clip, ss, [tmp_path / "a2.mp4", tmp_path / "b2.webm"], cache=cache, source_sha256=sha)
    assert again.cached == [True, True] and again.argv == [] and again.wall_s == 0.0
    assert sha256_file(tmp_path / "a2.mp4") == sha256_file(tmp_path / "a1.mp4")
    changed = settings(
        info, {"preset": "web_720p", "quality": "low"}, {"format": "webm", "resolution": "320x180", "quality": "draft"}
    )
    third = render_clip(
        info, clip, changed, [tmp_path / "a3.mp4", tmp_path / "b3.webm"], cache=cache, source_sha256=sha
    )
    assert third.cached == [False, True] and third.argv.count("-c:v") == 1  # only the changed target is encoded
    other_cut = render_clip(
        info, Clip(None, [(0.0, 1.2)]), ss[:1], [tmp_path / "a4.mp4"], cache=cache, source_sha256=sha
    )
    assert other_cut.cached == [False]
    # the builder's code is part of the key: once it changes, the same clip and settings are encoded again
    monkeypatch.setattr(cache_module, "builder_version", lambda: "another builder")
    rebuilt = render_clip(info, clip, ss[:1], [tmp_path / "a5.mp4"], cache=cache, source_sha256=sha)
    assert rebuilt.cached == [False] and rebuilt.argv
    # no stray hard links beside the files the cache placed (a link renamed over itself stays behind)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_the_cache_key_follows_what_the_builder_does_not_how_it_is_written():
    """Moving, reformatting or re-importing the command builder, or rewriting the preset YAML in another
    style, keeps cached renditions; changing what either says (a constant, an argument, a value)
    invalidates them."""
    from vexport_pipeline.core.media.cache import BUILDER_MODULES, builder_fingerprint, builder_sources, builder_version
    from vexport_pipeline.core.spec.presets import BUILTIN_FILE

    sources, presets = builder_sources(), BUILTIN_FILE.read_text()
    assert builder_fingerprint(sources, presets) == builder_version()
    at = BUILDER_MODULES.index("vexport_pipeline.core.media.commands")

    def with_commands(text: str, data: str = presets) -> str:
        return builder_fingerprint([*sources[:at], text, *sources[at + 1 :]], data)

    commands = sources[at]
    moved = commands.replace(
        "from .loudness import LoudnessPlan", "from vexport_pipeline.core.media.loudness import (\n    LoudnessPlan,\n)"
    )
    assert moved != commands
    reformatted = moved.replace('"""FFmpeg command building', '"""Builds FFmpeg commands') + "\n\n# a comment\n"
    reformatted = reformatted.replace("def _num(x: float) -> str:", "def _num(x: float) -> str:  # formats a number")
    reformatted = reformatted.replace('"-nostats"', "'-nostats'")
    assert with_commands(reformatted) == builder_version()
    assert '"-nostats"' in commands
    assert with_commands(commands.replace('"-nostats"', '"-stats"')) != builder_version()
    tweaked = commands.replace('"auto-alt-ref": 1', '"auto-alt-ref": 0')
    assert tweaked != commands and with_commands(tweaked) != builder_version()

    restyled = "# the same presets, said differently\n" + presets.replace(
        "target: {format: mp4, video_codec: h264, resolution: 1080p, quality: high}",
        "target:\n    format: 'mp4'\n    video_codec: h264\n    resolution: \"1080p\"\n    quality: high",
    ).replace("max_duration: 43200", "max_duration: 43200  # 12 hours")
    assert restyled != presets and with_commands(commands, restyled) == builder_version()
    assert with_commands(commands, presets.replace("max_duration: 43200", "max_duration: 43201")) != builder_version()


@pytest.fixture(scope="module")
def gop_source(tmp_path_factory):
    """10 s, 25 fps, closed GOPs of 1 s with B-frames: the case naive copy cuts get wrong."""
    from vexport_pipeline_tests.conftest import make_clip

    return make_clip(
        tmp_path_factory.mktemp("gop") / "gop.mp4",
        seconds=10,
        extra_v=["-preset", "veryfast", "-keyint_min", "25", "-sc_threshold", "0", "-bf", "2"],
    )


def test_stream_copy_fast_path_is_frame_exact_and_in_sync(gop_source, tmp_path):
    import av

    info = probe(gop_source)
    assert info.video.profile == "High"
    comp = parse_composition(
        {
            "source": "x.mp4",
            "segments": [{"start": 1, "end": 3}, {"start": 4, "end": 6}, {"start": 7, "end": 10}],
            "targets": [{"format": "mp4", "video_codec": "h264", "resolution": "source"}],
        }
    )
    timeline = build_timeline(comp, info, keyframe_times(gop_source))
    [clip] = timeline.clips
    assert clip.cuts_on_keyframes and clip.duration == 7.0
    [s] = settings(info, {"format": "mp4", "video_codec": "h264", "resolution": "source"})
    out = tmp_path / "copy.mp4"
    done = render_clip(info, clip, [s], [out])
    assert done.copied == [True] and "copy" in done.argv
    got = probe(out)
    frames, _, errors = count_frames(out)
    assert frames == 175 and not errors  # 50 + 50 + 75, nothing leaked in at the joins
    assert got.video.duration == pytest.approx(7.0, abs=1e-3) and got.video.start_time == 0.0
    assert abs(got.audio.start_time - got.video.start_time) < 0.02 and got.audio.duration == pytest.approx(
        7.0, abs=0.05
    )
    assert got.faststart and got.video.codec == "h264"
    with av.open(str(out)) as c:
        pts = [f.pts for f in c.decode(video=0)]
    assert len(set(pts)) == len(pts) and pts == sorted(pts)
    assert not list(tmp_path.glob(".*"))  # pieces and partials are gone
    # the same frames as an encode of the same timeline would show: compare one frame after each join
    enc = tmp_path / "enc.mp4"
    forced = settings(info, {"format": "mp4", "video_codec": "h264", "resolution": "source", "crf": 18})[0]
    assert render_clip(info, clip, [forced], [enc]).copied == [False]
    assert count_frames(enc)[0] == 175


def test_off_keyframe_cuts_encode_unless_snapping_is_allowed(gop_source, tmp_path):
    info = probe(gop_source)
    data = {
        "source": "x.mp4",
        "segments": [{"start": 1.2, "end": 2.5}],
        "targets": [{"format": "mp4", "resolution": "source"}],
    }
    [clip] = build_timeline(parse_composition(data), info, keyframe_times(gop_source)).clips
    assert not clip.cuts_on_keyframes
    [s] = settings(info, {"format": "mp4", "resolution": "source"})
    assert render_clip(info, clip, [s], [tmp_path / "a.mp4"]).copied == [False]
    [snapped] = build_timeline(
        parse_composition({**data, "snap_to_keyframes": True}), info, keyframe_times(gop_source)
    ).clips
    assert snapped.ranges == [(1.0, 3.0)] and snapped.cuts_on_keyframes
    assert render_clip(info, snapped, [s], [tmp_path / "b.mp4"]).copied == [True]
    assert count_frames(tmp_path / "b.mp4")[0] == 50


def test_bitrate_targets_are_two_pass_and_land_near_the_rate(media, tmp_path):
    info = probe(media["av"])
    [s] = settings(info, {"format": "mp4", "resolution": "640x360", "video_bitrate": "300k"})
    out = tmp_path / "abr.mp4"
    done = render_clip(info, Clip(None, [(0.0, 4.0)]), [s], [out])
    assert "-pass" in done.argv and done.argv[done.argv.index("-pass") + 1] == "2"
    kbps = probe(out).video.bit_rate / 1000
    assert 240 < kbps < 360, kbps  # two-pass ABR lands close to 300k
    assert not [p for p in tmp_path.iterdir() if "pass" in p.name]  # no pass logs left behind


def test_size_cap_of_a_platform_is_met(media, tmp_path, monkeypatch):
    presets = tmp_path / "p.yaml"
    presets.write_text("mail:\n  base: web_720p\n  target: {quality: high}\n  limits: {max_file_bytes: 250000}\n")
    monkeypatch.setenv("VEXPORT_PRESETS", str(presets))
    info = probe(media["av"])
    [capped] = settings(info, {"preset": "mail"})
    [free] = settings(info, {"preset": "web_720p", "quality": "high"})
    done = render_clip(info, Clip(None, [(0.0, 4.0)]), [capped, free], [tmp_path / "capped.mp4", tmp_path / "free.mp4"])
    assert done.settings[0].video_bitrate and done.settings[1].video_bitrate is None
    size = (tmp_path / "capped.mp4").stat().st_size
    assert size <= 250_000 and size > 150_000, size  # under the cap, without wasting it
    assert (tmp_path / "free.mp4").stat().st_size > 250_000


def test_loudness_normalization_holds_for_every_audio_codec_on_a_surround_source(awkward, tmp_path):
    """5.1 in, stereo out: PCM in MOV, AAC and Opus all land on the target (the downmix comes before loudnorm)."""
    from vexport_pipeline.core.validation.analyze import analyze

    info = probe(awkward["surround"])
    ss = settings(
        info,
        {"preset": "prores_master", "profile": "proxy"},
        {"preset": "web_720p", "quality": "draft"},
        {"format": "webm", "resolution": "720p", "quality": "draft"},
    )
    outs = [tmp_path / "m.mov", tmp_path / "w.mp4", tmp_path / "w.webm"]
    render_clip(info, Clip(None, [(0.0, 2.0)]), ss, outs, loudness=(-16.0, -1.5))
    for out in outs:
        found = analyze(out)
        assert found.integrated_lufs == pytest.approx(-16.0, abs=1.0), out.name
        assert found.true_peak_dbtp <= -1.4, out.name
        assert probe(out).audio.channels == 2
