"""The check families on hand-built probe results: pure logic, no FFmpeg (the real-file tests are in
test_validation.py)."""

import inspect
from dataclasses import replace
from fractions import Fraction

from vexport_pipeline.core.media.probe import AudioInfo, MediaInfo, VideoInfo
from vexport_pipeline.core.spec.composition import Target
from vexport_pipeline.core.spec.presets import PresetBook
from vexport_pipeline.core.validation.checks import CHECKS, CheckContext, platform, sync
from vexport_pipeline.core.validation.verdict import Issue, verdict

VIDEO = VideoInfo("h264", "High", "yuv420p", 1080, 1920, 1080, 1920, 0, "1", 30.0, "30", 300, 10.0, 0.0, 6_000_000)
AUDIO = AudioInfo("aac", 48000, 2, "stereo", 10.0, 0.0, 128_000)
INFO = MediaInfo("/x.mp4", "mov,mp4", 10.0, 8_000_000, 6_200_000, 0.0, VIDEO, AUDIO, stream_count=2)


def context(preset="tiktok", info=INFO, **kw):
    s = PresetBook.load().resolve(Target(preset=preset), info)
    return CheckContext("/x.mp4", s, info, decode=False, **kw)


def test_every_check_has_one_signature():
    for check in CHECKS:
        params = list(inspect.signature(check).parameters)
        assert params == ["ctx"], check.__qualname__


def test_platform_limits_fail_firm_ones_and_only_warn_uncertain_ones():
    ctx = context("instagram_story", info=replace(INFO, duration=90.0, size_bytes=150_000_000))
    found = {i.code: i.severity for i in platform.file_limits(ctx)}
    limits, uncertain = ctx.s.limits, set(ctx.s.uncertain)
    assert "too_long" in found and "file_too_large" in found
    assert found["too_long"] == ("warning" if "max_duration" in uncertain else "error")
    assert found["file_too_large"] == ("warning" if "max_file_bytes" in uncertain else "error")
    assert limits["max_duration"] < 90


def test_sync_is_judged_on_the_change_from_the_source():
    late = replace(INFO, audio=replace(AUDIO, start_time=0.2, duration=9.8))  # starts 200 ms late, ends on time
    assert [i.code for i in sync.av_sync(context(info=late))] == ["av_sync"]
    assert sync.av_sync(context(info=late, source_av_offset_ms=-200.0)) == []  # the source was like that
    slight = replace(INFO, audio=replace(AUDIO, start_time=0.08, duration=9.92))  # 80 ms late
    [issue] = sync.av_sync(context(info=slight))
    assert issue.severity == "warning"  # between the ATSC and ITU limits, with half a frame's grid allowed
    fps = float(Fraction(context().s.fps))
    on_grid = replace(INFO, video=replace(INFO.video, start_time=0.5 / fps - 0.001))  # just under half a frame
    assert sync.av_sync(context(info=on_grid)) == []  # a picture starts on its frame grid


def test_verdict_weights():
    issues = [Issue("error", "a", ""), Issue("warning", "b", ""), Issue("warning", "c", "")]
    assert verdict(issues) == ("fail", 60)
    assert verdict(issues[1:]) == ("warn", 90)
    assert verdict([]) == ("pass", 100)
    assert verdict([Issue("error", str(n), "") for n in range(5)]) == ("fail", 0)
