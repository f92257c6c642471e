"""Each validation check against a deliberately broken file it must catch, and a good file it passes."""

import subprocess
from dataclasses import replace

import pytest

from vexport_pipeline.core.media.probe import probe
from vexport_pipeline.core.settings import ffmpeg_exe
from vexport_pipeline.core.spec.composition import Target
from vexport_pipeline.core.spec.presets import PresetBook
from vexport_pipeline.core.validation.checks import check_file

V = [
    "-f",
    "lavfi",
    "-i",
    "testsrc2=s=320x180:r=25:d=2,setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv",
]
A = ["-f", "lavfi", "-i", "sine=f=440:d=2:r=48000"]
ENC = [
    "-c:v",
    "libx264",
    "-preset",
    "veryfast",
    "-g",
    "50",
    "-pix_fmt",
    "yuv420p",
    "-c:a",
    "aac",
    "-ac",
    "2",
    "-ar",
    "48000",
]
FAST = ["-movflags", "+faststart"]

CASES = {
    # name: (ffmpeg args, the issue code it must raise, severity)
    "good": (V + A + ENC + FAST, None, None),
    "chroma_444": (V + A + ENC[:-6] + ["-pix_fmt", "yuv444p", "-c:a", "aac"] + FAST, "pix_fmt_mismatch", "error"),
    "odd_size": (
        ["-f", "lavfi", "-i", "testsrc2=s=320x180:r=25:d=2"]
        + A
        + ["-vf", "scale=321:181"]
        + ENC[:-6]
        + ["-pix_fmt", "yuv444p", "-c:a", "aac"]
        + FAST,
        "odd_dimensions",
        "error",
    ),
    "wrong_size": (["-f", "lavfi", "-i", "testsrc2=s=640x360:r=25:d=2"] + A + ENC + FAST, "size_mismatch", "error"),
    "wrong_codec": (V + A + ["-c:v", "mpeg4", "-c:a", "aac"] + FAST, "codec_mismatch", "error"),
    "vfr": (
        ["-f", "lavfi", "-i", "testsrc2=s=320x180:r=25:d=2"]
        + A
        + ["-vf", r"select='not(eq(mod(n\,4)\,3))'", "-fps_mode", "passthrough"]
        + ENC
        + FAST,
        "variable_frame_rate",
        "error",
    ),
    "moov_at_end": (V + A + ENC, "moov_at_end", "error"),
    "audio_200ms_late": (V + ["-itsoffset", "0.2"] + A + ENC + FAST, "av_sync", "error"),
    "clipping": (V + A + ["-af", "volume=30dB"] + ENC + FAST, "clipping", "error"),
    "black_stretch": (
        V + A + ["-vf", "drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill:enable='between(t,0.5,1.6)'"] + ENC + FAST,
        "black_frames",
        "warning",
    ),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("broken")
    out = {}
    for name, (args, _, _) in CASES.items():
        out[name] = d / f"{name}.mp4"
        subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args, "-t", "2", str(out[name])], check=True
        )
    data = out["good"].read_bytes()
    out["truncated"] = d / "truncated.mp4"
    out["truncated"].write_bytes(data[: int(len(data) * 0.6)])
    return out


@pytest.fixture(scope="module")
def target(files):
    return PresetBook.load().resolve(
        Target(format="mp4", resolution="320x180", fps=25, quality="draft"), probe(files["good"])
    )


def codes(report, severity=None):
    return {i.code for i in report.issues if severity is None or i.severity == severity}


def test_the_good_file_passes(files, target):
    report = check_file(files["good"], target, expected_duration=2.0, source_has_audio=True)
    assert report.status == "pass" and report.score == 100, report.issues
    assert report.measurements["decoded_frames"] == 50 and report.measurements["av_offset_ms"] == pytest.approx(
        0, abs=25
    )


@pytest.mark.parametrize("name", [n for n in CASES if n != "good"])
def test_each_broken_file_is_caught(files, target, name):
    _, code, severity = CASES[name]
    report = check_file(files[name], target, expected_duration=2.0, source_has_audio=True)
    assert code in codes(report, severity), (name, report.issues)
    assert report.status == ("fail" if severity == "error" else "warn")
    assert all(i.hint for i in report.issues)  # every issue says how to fix it


def test_black_stretch_is_reported_with_its_times(files, target):
    report = check_file(files["black_stretch"], target, expected_duration=2.0, source_has_audio=True)
    [(start, end)] = report.measurements["black"]
    assert start == pytest.approx(0.52, abs=0.05) and end == pytest.approx(1.6, abs=0.05)


def test_truncated_file_fails(files, target):
    report = check_file(files["truncated"], target, expected_duration=2.0, source_has_audio=True)
    assert report.status == "fail" and codes(report, "error") & {
        "unreadable",
        "decode_error",
        "frame_count",
        "duration_mismatch",
    }


def test_platform_size_cap_and_duration_range(files, target):
    capped = replace(target, limits={"max_file_bytes": 10_000})
    assert "file_too_large" in codes(check_file(files["good"], capped, decode=False, source_has_audio=True), "error")
    short = replace(target, limits={"min_duration": 3, "max_duration": 60})
    assert "too_short" in codes(check_file(files["good"], short, decode=False, source_has_audio=True), "error")
    uncertain = replace(target, limits={"max_duration": 1}, uncertain=("max_duration",))
    report = check_file(files["good"], uncertain, decode=False, source_has_audio=True)
    assert "too_long" in codes(report, "warning") and report.status == "warn"  # a (?) limit only warns


def test_loudness_target_is_checked_to_one_lu(files, target):
    report = check_file(files["good"], target, source_has_audio=True, loudness_target=(-14.0, -1.0))
    assert "loudness_target" in codes(report, "error")  # the tone sits near -21 LUFS
    assert report.loudness_lufs == pytest.approx(-21.8, abs=1.0)


def test_quality_scores_against_the_source_timeline_and_tier_floor(media, tmp_path):
    from vexport_pipeline.core.media.render import render_clip
    from vexport_pipeline.core.media.timeline import Clip

    info = probe(media["av"])
    book = PresetBook.load()
    good = book.resolve(Target(format="mp4", resolution="640x360", quality="high"), info)
    bad = replace(good, crf=51, maxrate=60_000, bufsize=120_000)  # starved: must fall under the high tier's floor
    vertical = book.resolve(Target(format="mp4", resolution="180x320", fit="crop", quality="high"), info)
    clip = Clip(None, [(1.0, 3.0)])
    paths = [tmp_path / "good.mp4", tmp_path / "bad.mp4", tmp_path / "vertical.mp4"]
    render_clip(info, clip, [good, bad, vertical], paths)
    ok = check_file(paths[0], good, expected_duration=2.0, source_has_audio=True, reference=(info, clip))
    q = ok.measurements["quality"]
    assert q["model"] == "vmaf_v0.6.1" and ok.vmaf >= 93 and q["vmaf_min"] <= q["vmaf_p5"] <= q["vmaf_mean"]
    assert q["psnr_mean"] > 35 and q["ssim_mean"] > 0.95 and ok.status == "pass"
    poor = check_file(
        paths[1], bad, expected_duration=2.0, source_has_audio=True, reference=(info, clip), quality="full"
    )
    assert "vmaf_below_tier" in codes(poor, "error") and poor.measurements["quality"]["subsample"] == 1
    assert poor.vmaf < ok.vmaf - 10
    assert q["reference"].startswith("source at the rendition's size") and q["vmaf_source_size"] > 80
    # at the source's own size, the rendition's figure is the source-size figure: no second pass for it
    assert (info.video.width, info.video.height) == (640, 360) and q["vmaf_source_size"] == q["vmaf_mean"]
    # a search's probe needs only the VMAF: the same figure, without PSNR, SSIM or the source-size figure
    from vexport_pipeline.core.validation.vmaf import score

    lean = score(paths[0], info, clip, good, extras=False)
    assert lean["vmaf_mean"] == q["vmaf_mean"] and lean["frames"] == q["frames"]
    assert lean["psnr_mean"] is lean["ssim_mean"] is lean["vmaf_source_size"] is None
    # a crop is scored against the same region of the source; the source-size figure does not apply
    cropped = check_file(paths[2], vertical, expected_duration=2.0, source_has_audio=True, reference=(info, clip))
    assert cropped.vmaf >= 90 and cropped.measurements["quality"]["vmaf_source_size"] is None


def test_edit_lists_and_platform_audio_and_shape_rules(files, target, tmp_path):
    assert probe(files["good"]).extra["edit_list"] is True  # x264 B-frames: FFmpeg writes an edit list by default
    strict = replace(
        target,
        limits={
            "no_edit_list": True,
            "audio_codecs": ["opus"],
            "sample_rates": [44100],
            "min_aspect": 1.0,
            "max_aspect": 1.0,
            "max_video_bitrate": 10_000,
            "max_channels": 1,
        },
    )
    found = codes(check_file(files["good"], strict, decode=False, source_has_audio=True), "error")
    assert {
        "edit_list",
        "audio_codec_refused",
        "sample_rate",
        "aspect_out_of_range",
        "bitrate_too_high",
        "channels",
    } <= found


def test_youtube_preset_output_has_no_edit_list_and_starts_at_zero(media, tmp_path):
    from vexport_pipeline.core.media.render import render_clip
    from vexport_pipeline.core.media.timeline import Clip

    info = probe(media["av"])
    s = PresetBook.load().resolve(Target(preset="youtube_1080p", quality="draft"), info)
    out = tmp_path / "yt.mp4"
    render_clip(info, Clip(None, [(0.0, 1.0)]), [s], [out])
    got = probe(out)
    assert got.extra["edit_list"] is False and got.video.start_time == 0.0 and got.faststart
    report = check_file(out, s, expected_duration=1.0, source_has_audio=True)
    assert report.status == "pass", report.issues


def test_h264_level_above_the_target_is_caught(files, target, tmp_path):
    assert probe(files["good"]).video.level is not None
    strict = replace(target, level="1.0")  # 320x180@25 needs more than level 1.0 allows
    assert "level_too_high" in codes(check_file(files["good"], strict, decode=False, source_has_audio=True), "error")


@pytest.mark.parametrize("period", [2, 3, 4, 5, 8, 16])
def test_sampled_frames_take_every_position_of_an_encoders_frame_pattern_alike(period):
    """Encoders repeat a quality pattern (a B-frame group of 3, x265's of 5, VP9's alt-ref groups of 8 or 16): a
    stride sharing a factor with it scores only some positions (every 10th frame read VP9 6 VMAF high). On a
    pattern of that period the sampled mean stays within a tenth of the pattern's range of the true mean."""
    from types import SimpleNamespace

    from vexport_pipeline.core.media.timeline import Clip
    from vexport_pipeline.core.validation.vmaf import stride

    s = SimpleNamespace(fps="30000/1001")
    for seconds in (2.0, 6.0, 30.0, 600.0):
        k = stride(Clip(None, [(0.0, seconds)]), s)
        n = int(seconds * 30)
        frames = [100.0 if i % period == 0 else 80.0 for i in range(n)]  # a sharp first frame in each group
        assert n / k >= 20 or k == 1
        sampled = frames[::k]
        assert abs(sum(sampled) / len(sampled) - sum(frames) / n) <= 2.0, (seconds, k)


def test_a_file_whose_name_says_corrupt_is_not_taken_for_corrupt(files, tmp_path):
    """Decode errors were found in FFmpeg's stderr by words such as `corrupt`, and the file's own path is in that
    stderr: every rendition of an export named `corrupt-ts` failed."""
    from vexport_pipeline.core.validation.analyze import analyze

    named = tmp_path / "corrupt-take" / "missing picture.mp4"
    named.parent.mkdir()
    named.write_bytes(files["good"].read_bytes())
    assert analyze(named).decode_errors == []
