"""Command building is pure: data in, argv out."""

from fractions import Fraction
from pathlib import Path

from vexport_pipeline.core.media.commands import build_clip_command
from vexport_pipeline.core.media.probe import AudioInfo, MediaInfo, VideoInfo
from vexport_pipeline.core.media.timeline import Clip
from vexport_pipeline.core.spec.composition import Target
from vexport_pipeline.core.spec.presets import PresetBook, output_size

SOURCE = MediaInfo(
    path="/media/in.mp4",
    format_name="mov,mp4",
    duration=60.0,
    size_bytes=1,
    bit_rate=None,
    start_time=0.0,
    video=VideoInfo("h264", "High", "yuv420p", 1920, 1080, 1920, 1080, 0, "1", 29.97, "30000/1001", 0, 60.0, 0.0, None),
    audio=AudioInfo("aac", 48000, 2, "stereo", 60.0, 0.0, None),
    stream_count=2,
)


def resolve(**fields):
    return PresetBook.load().resolve(Target(**fields), SOURCE)


def test_sizes_are_even_and_keep_aspect():
    assert output_size("720p", 1920, 1080) == (1280, 720)
    assert output_size("1080p", 1080, 1920) == (1080, 1920)
    assert output_size("720p", 1440, 1080) == (960, 720)
    assert output_size("source", 1919, 1079) == (1920, 1080)
    assert output_size("1001x999", 10, 10) == (1002, 1000)


def test_tiers_are_vmaf_targets_capped_only_by_platform_and_level():
    low, high = resolve(preset="web_720p", quality="low"), resolve(preset="web_720p", quality="high")
    assert high.vmaf_target > low.vmaf_target and high.crf < low.crf  # the search starts from the tier's CRF
    hd = resolve(preset="youtube_1080p", quality="high")
    assert (hd.width, hd.height, hd.crf, hd.vmaf_target) == (1920, 1080, 18, 94.0)
    assert hd.maxrate == 25_000_000 and hd.level == "4.0"  # H.264 level 4.0's peak, not a tier's guess
    reels = resolve(preset="instagram_reels")
    assert reels.maxrate == 25_000_000 and reels.vmaf_target == 91.0  # the platform's 25 Mb/s cap
    fixed = resolve(preset="web_720p", crf=20)
    assert fixed.crf == 20 and fixed.vmaf_target is None  # an explicit CRF wins: no search, no floor
    assert resolve(preset="web_720p", vmaf=95).vmaf_target == 95.0
    assert resolve(format="mov", video_codec="prores").vmaf_target is None
    assert resolve(format="webm", resolution="720p").encoder == "libvpx-vp9"
    assert resolve(format="webm", resolution="720p").audio_encoder == "libopus"
    assert resolve(preset="tiktok").fps == "30000/1001" and resolve(preset="tiktok", fps=25).fps == "25"


def test_one_process_reads_each_range_once_and_splits_to_every_target():
    targets = [resolve(preset="youtube_1080p"), resolve(preset="web_720p"), resolve(format="webm", resolution="720p")]
    clip = Clip(None, [(5.0, 12.5), (30.0, 45.0)])
    outs = [Path(f"/work/o{i}.{t.ext}") for i, t in enumerate(targets)]
    argv = build_clip_command("ffmpeg", Path(SOURCE.path), clip, targets, outs, source_has_audio=True)
    assert argv.count("-i") == 2  # one input per segment, never one decode per target
    assert argv[argv.index("-i") + 1] == "file:/media/in.mp4"
    assert argv.count("-protocol_whitelist") == 2
    graph = argv[argv.index("-filter_complex") + 1]
    assert (
        "concat=a=0:n=2:v=1" in graph and "concat=a=1:n=2:v=0" in graph and "split=3" in graph and "asplit=3" in graph
    )
    assert graph.count("format=yuv420p") == 3 and graph.count("fps=fps=30000/1001") == 3  # always constant rate
    assert graph.count("apad=whole_dur=") == 2  # short audio is padded per segment
    assert argv.count("+faststart") + argv.count("+faststart+negative_cts_offsets") == 2  # both MP4s, not the WebM
    assert (
        argv.count("+faststart+negative_cts_offsets") == 1 and argv.count("-use_editlist") == 1
    )  # YouTube: no edit list
    for o in outs:
        assert str(o) in argv
    assert argv[argv.index("-progress") + 1] == "pipe:1"
    assert argv.count("-level:v") == 2 and "4.0" in argv  # 1080p29.97 at 8 Mb/s


def test_crossfade_uses_xfade_and_acrossfade_offsets():
    t = resolve(preset="web_720p")
    clip = Clip(None, [(0.0, 4.0), (10.0, 14.0), (20.0, 22.0)], crossfade=0.5)
    argv = build_clip_command("ffmpeg", Path("/m/in.mp4"), clip, [t], [Path("/o.mp4")], source_has_audio=True)
    graph = argv[argv.index("-filter_complex") + 1]
    assert "xfade=duration=0.5:offset=3.5" in graph and "xfade=duration=0.5:offset=7" in graph
    assert graph.count("acrossfade=d=0.5") == 2
    assert argv[len(argv) - 1 - argv[::-1].index("-t") + 1] == "9"  # 4 + 4 + 2 - 2 * 0.5


def test_no_audio_source_maps_no_audio():
    t = resolve(preset="web_720p")
    argv = build_clip_command(
        "ffmpeg", Path("/m/in.mp4"), Clip(None, [(0, 2)]), [t], [Path("/o.mp4")], source_has_audio=False
    )
    assert "-c:a" not in argv and "0:a" not in " ".join(argv)


def test_fit_modes_build_the_expected_filters():
    for fit, needle in [("pad", "pad=1080:1920"), ("crop", "crop=1080:1920"), ("blur", "boxblur")]:
        t = resolve(preset="tiktok", fit=fit)
        argv = build_clip_command(
            "ffmpeg", Path("/m/in.mp4"), Clip(None, [(0, 2)]), [t], [Path("/o.mp4")], source_has_audio=True
        )
        assert needle in argv[argv.index("-filter_complex") + 1]


def test_h264_levels_follow_size_rate_and_bitrate():
    from vexport_pipeline.core.spec.presets import h264_level

    assert h264_level(1280, 720, Fraction(30), 4_000_000) == "3.1"
    assert h264_level(1920, 1080, Fraction(30), 8_000_000) == "4.0"
    assert h264_level(1920, 1080, Fraction(30), 40_000_000) == "4.1"
    assert h264_level(1920, 1080, Fraction(60), 12_000_000) == "4.2"
    assert h264_level(3840, 2160, Fraction(30), 45_000_000) == "5.1"
    assert h264_level(7680, 4320, Fraction(30), 100_000_000) == "6.0"
    assert h264_level(7680, 4320, Fraction(60), 100_000_000) == "6.1"


def test_vfr_source_gets_the_nearest_standard_constant_rate():
    from dataclasses import replace

    vfr = replace(SOURCE, video=replace(SOURCE.video, fps=22.667, fps_exact="68/3", vfr=True, base_fps="30"))
    assert PresetBook.load().resolve(Target(preset="web_720p"), vfr).fps == "30"


def test_silent_track_only_where_the_platform_requires_audio(tmp_path, monkeypatch):
    from dataclasses import replace

    presets = tmp_path / "p.yaml"
    presets.write_text("needs_audio:\n  base: web_720p\n  limits: {requires_audio: true}\n")
    monkeypatch.setenv("VEXPORT_PRESETS", str(presets))
    mute = replace(SOURCE, audio=None)
    book = PresetBook.load()
    need, plain = book.resolve(Target(preset="needs_audio"), mute), book.resolve(Target(preset="web_720p"), mute)
    assert need.silent_audio and need.audio_encoder == "aac" and plain.audio_encoder is None
    argv = build_clip_command(
        "ffmpeg",
        Path("/m/in.mp4"),
        Clip(None, [(0, 2)]),
        [need, plain],
        [Path("/a.mp4"), Path("/b.mp4")],
        source_has_audio=False,
    )
    assert "anullsrc=r=48000:cl=stereo:d=2" in argv
    assert argv.count("-c:a") == 1


def test_matching_aspect_scales_without_pad_or_crop():
    t, vertical = resolve(preset="web_720p"), resolve(preset="tiktok")
    argv = build_clip_command(
        "ffmpeg",
        Path("/m/in.mp4"),
        Clip(None, [(0, 2)]),
        [t, vertical],
        [Path("/a.mp4"), Path("/b.mp4")],
        source_has_audio=True,
        source_size=(1920, 1080),
    )
    graph = argv[argv.index("-filter_complex") + 1]
    assert "scale=1280:720:in_color_matrix=bt709:out_color_matrix=bt709:out_range=tv[" in graph  # a plain scale
    assert "pad=1280:720" not in graph  # 16:9 into 16:9: no bars
    assert "crop=1080:1920" in graph  # 16:9 into 9:16 still crops


def test_the_linear_graph_sort_builds_the_same_command_as_ffmpeg_python_and_copes_with_the_segment_cap():
    """ffmpeg-python's own sort is quadratic (500 segments: seconds to minutes); ours must give the same argv."""
    import ffmpeg._run
    import ffmpeg.dag

    from vexport_pipeline.core.media import graph

    targets = [resolve(preset="web_720p"), resolve(format="webm", resolution="360x640", fit="blur")]
    outs = [Path("/work/a.mp4"), Path("/work/b.webm")]
    clip = Clip(None, [(i * 1.0, i * 1.0 + 0.5) for i in range(40)], crossfade=0.0)
    built = []
    for sorter in (ffmpeg.dag.topo_sort, graph.topo_sort):
        ffmpeg._run.topo_sort = sorter
        try:
            built.append(build_clip_command("ffmpeg", Path(SOURCE.path), clip, targets, outs, source_has_audio=True))
        finally:
            graph.install()
    assert built[0] == built[1]
    big = Clip(None, [(i * 0.1, i * 0.1 + 0.05) for i in range(500)])
    argv = build_clip_command("ffmpeg", Path(SOURCE.path), big, targets[:1], outs[:1], source_has_audio=True)
    assert argv.count("-i") == 500 and len(argv[argv.index("-filter_complex") + 1]) > 32 * 1024


def test_a_filter_graph_too_long_for_one_argument_goes_through_a_file(tmp_path):
    import tempfile

    from vexport_pipeline.core.media.runner import run_ffmpeg
    from vexport_pipeline.core.settings import ffmpeg_exe

    chain = "[0:v]" + " " * 150_000 + "null[out]"  # 150 KB (FFmpeg skips the blanks): over Linux's 128 KiB per argument
    out = tmp_path / "o.mp4"
    argv = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-nostats", "-progress", "pipe:1"]
    argv += ["-f", "lavfi", "-i", "testsrc2=s=64x36:r=5:d=1", "-filter_complex", chain, "-map", "[out]", str(out)]
    before = set(Path(tempfile.gettempdir()).glob("vexport-graph-*"))
    run_ffmpeg(argv, duration=1, outputs=[out])
    assert out.stat().st_size > 0
    assert set(Path(tempfile.gettempdir()).glob("vexport-graph-*")) == before  # the graph file is gone again
