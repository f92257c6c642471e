"""`vexport` as a user runs it: exit codes, messages, the summary JSON, files that play."""

import json
import subprocess

import av
import numpy as np
import pytest

from vexport_pipeline.core.media.probe import count_frames, probe
from vexport_pipeline.core.settings import ffmpeg_exe
from vexport_pipeline.core.validation.playback import chromium
from vexport_pipeline_tests.conftest import ffmpeg_make, passed, tone_hz, vexport, write_manifest

CONTRACT_TOP = {"export_id", "status", "source", "output_duration", "renditions", "bundles", "errors"}
CONTRACT_RENDITION = {
    "target",
    "clip_id",
    "uri",
    "path",
    "container",
    "video_codec",
    "audio_codec",
    "width",
    "height",
    "fps",
    "duration",
    "size_bytes",
    "sha256",
    "validation",
    "links",
}


@pytest.mark.browser
def test_export_writes_the_contract_summary_of_playable_files(home, media, tmp_path):
    manifest = write_manifest(
        tmp_path / "proj",
        {
            "id": "teaser",
            "source": str(media["av"]),
            "export_type": "combined",
            "segments": [{"start": 0, "end": 1.5}, {"start": "00:00:02.000", "end": 3.5}],
            "transitions": {"crossfade": 0.5},
            "audio": {"normalize": True, "target_lufs": -16, "true_peak": -1.5},
            "validation": {"playback": bool(chromium())},  # the optional real-client step, where Chromium is installed
            "targets": [
                {"preset": "web_720p", "quality": "draft", "resolution": "640x360"},  # the source's own size
                {"format": "webm", "resolution": "640x360", "quality": "draft"},
            ],
        },
    )
    out = tmp_path / "out.json"
    proc = vexport("export", manifest, "--json", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "web_720p" in proc.stdout and ("pass" in proc.stdout or "warn 95" in proc.stdout)
    data = json.loads(out.read_text())
    assert set(data) == CONTRACT_TOP and data["status"] == "delivered" and data["export_id"] == "teaser"
    assert data["output_duration"] == 2.5
    src = data["source"]
    assert (src["width"], src["height"], src["fps"], src["video_codec"], src["audio_codec"], src["has_audio"]) == (
        640,
        360,
        25.0,
        "h264",
        "aac",
        True,
    )
    assert len(src["sha256"]) == 64
    assert [r["target"] for r in data["renditions"]] == ["web_720p", "webm_vp9_640x360_draft"]
    for r in data["renditions"]:
        assert set(r) >= CONTRACT_RENDITION
        assert r["uri"] == "file://" + r["path"]
        got = probe(r["path"])
        assert (got.video.width, got.video.height, got.video.fps) == (r["width"], r["height"], r["fps"])
        assert got.size_bytes == r["size_bytes"] and got.duration == pytest.approx(r["duration"])
        assert got.video.codec == r["video_codec"] and got.audio.codec == r["audio_codec"]
        frames, _, errors = count_frames(r["path"])
        assert not errors and abs(frames - 2.5 * 25) <= 1
        assert passed(r["validation"]) and r["validation"]["score"] >= 95
        assert r["validation"]["loudness_lufs"] == pytest.approx(
            -16, abs=1.0
        )  # two-pass loudnorm, measured on the output
        assert r["validation"]["vmaf"] > 70 and abs(r["validation"]["av_offset_ms"]) < 25
        assert (
            r["links"]
            and r["links"][0]["url"].startswith("http://127.0.0.1:8787/d/")
            and r["links"][0]["expires_at"].endswith("Z")
        )
    kept = json.loads((home.store / "teaser" / "current" / "summary.json").read_text())
    assert kept["renditions"][0]["sha256"] == data["renditions"][0]["sha256"]

    # the same export again: every file from the cache, equal to what is delivered, so that version is reused
    again = tmp_path / "again.json"
    proc = vexport("export", manifest, "--json", again)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    second = json.loads(again.read_text())
    assert second["status"] == "delivered" and second["unchanged"] is True
    assert [r["path"] for r in second["renditions"]] == [r["path"] for r in data["renditions"]]
    versions = [p for p in (home.store / "teaser").iterdir() if not p.name.startswith(".") and p.name != "current"]
    assert len(versions) == 1, versions
    assert second["renditions"][0]["links"][0]["url"] != data["renditions"][0]["links"][0]["url"]  # new links
    strays = [p for p in home.work.rglob(".*") if p.is_file()]
    assert strays == [], strays


@pytest.mark.parametrize(
    "case,needle",
    [
        ("bad_field", "targets[0].resolution: '5k' is not one of"),
        ("corrupt_media", "not a readable media file"),
        ("outside_source", "segments[1]: 00:00:03.000-00:00:09.000 ends after the source ends"),
        ("url_source", "source: http: URLs are not allowed"),
        ("audio_only", "tone.m4a has no video stream"),
    ],
)
def test_refused_input_exits_2_names_the_problem_and_leaves_nothing(home, media, tmp_path, case, needle):
    folder = tmp_path / "proj"
    folder.mkdir()
    data = {"id": "bad", "source": str(media["av"]), "targets": [{"preset": "web_720p"}]}
    if case == "bad_field":
        data["targets"] = [{"preset": "web_720p", "resolution": "5k"}]
    elif case == "corrupt_media":
        (folder / "junk.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 500)
        data["source"] = "junk.mp4"
    elif case == "outside_source":
        data["segments"] = [{"start": 0, "end": 1}, {"start": 3, "end": 9}]
    elif case == "audio_only":
        subprocess.run(
            [
                ffmpeg_exe(),
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                "sine=d=1",
                "-c:a",
                "aac",
                str(folder / "tone.m4a"),
            ],
            check=True,
        )
        data["source"] = "tone.m4a"
    else:
        data["source"] = "http://127.0.0.1:9/a.mp4"
    out = tmp_path / "out.json"
    proc = vexport("export", write_manifest(folder, data), "--json", out)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in proc.stdout + proc.stderr
    summary = json.loads(out.read_text())
    assert summary["status"] == "refused" and needle in summary["errors"][0]["message"]
    assert not any(home.store.iterdir()) and not any(home.work.iterdir())


def test_validate_standalone_exit_codes(home, media, tmp_path):
    out = tmp_path / "report.json"
    bad = vexport("validate", media["av"], "--preset", "tiktok", "--json", out)
    assert bad.returncode == 1 and "size_mismatch" in bad.stdout
    report = json.loads(out.read_text())
    assert report["status"] == "fail" and report["score"] < 100
    assert {"severity", "code", "message"} <= set(report["issues"][0])
    good = vexport("validate", media["av"], "--preset", "vimeo")
    assert good.returncode == 0 and "pass" in good.stdout
    moov_last = tmp_path / "moov_last.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-i", str(media["av"]), "-c", "copy", str(moov_last)], check=True
    )
    late = vexport("validate", moov_last, "--preset", "vimeo")
    assert late.returncode == 1 and "moov_at_end" in late.stdout and "+faststart" in late.stdout
    unknown = vexport("validate", media["av"], "--preset", "tiktk")
    assert unknown.returncode == 2 and "did you mean 'tiktok'" in unknown.stderr
    missing = vexport("validate", tmp_path / "nope.mp4", "--preset", "vimeo")
    assert missing.returncode == 2 and "nope.mp4" in missing.stderr


def test_validate_reports_unreadable_files_as_failures_with_the_reason(media, tmp_path):
    """A CI script needs a `fail` report saying why, not a refusal: truncated and headerless files."""
    data = media["av"].read_bytes()
    for name, cut in (("half.mp4", data[: len(data) // 2]), ("head.mp4", data[:2000])):
        broken, out = tmp_path / name, tmp_path / f"{name}.json"
        broken.write_bytes(cut)
        proc = vexport("validate", broken, "--preset", "vimeo", "--json", out)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        report = json.loads(out.read_text())
        errors = [i for i in report["issues"] if i["severity"] == "error"]
        assert report["status"] == "fail" and errors and errors[0]["message"] and "Traceback" not in proc.stderr


def test_a_plain_ffmpeg_mp4_with_an_edit_list_only_warns_for_youtube(tmp_path):
    plain = tmp_path / "plain.mp4"
    subprocess.run(
        [
            ffmpeg_exe(),
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=1920x1080:r=25:d=1",
            "-f",
            "lavfi",
            "-i",
            "sine=d=1:r=48000",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
            "-movflags",
            "+faststart",
            str(plain),
        ],
        check=True,
    )
    out = tmp_path / "yt.json"
    proc = vexport("validate", plain, "--preset", "youtube_1080p", "--json", out)
    issues = {i["code"]: i for i in json.loads(out.read_text())["issues"]}
    assert issues["edit_list"]["severity"] == "warning" and "No Edit Lists" in issues["edit_list"]["message"]
    assert proc.returncode == 0, proc.stdout
    strict = vexport("validate", plain, "--preset", "instagram_reels")
    assert "edit_list" in strict.stdout and strict.returncode == 1  # Instagram's API spec requires none


def test_presets_lists_every_contract_preset():
    proc = vexport("presets", "--json", check=True)
    names = set(json.loads(proc.stdout))
    assert {
        "youtube_1080p",
        "youtube_4k",
        "youtube_shorts",
        "tiktok",
        "instagram_reels",
        "instagram_story",
        "instagram_feed_square",
        "instagram_feed_portrait",
        "facebook_feed",
        "facebook_reels",
        "linkedin",
        "x",
        "vimeo",
        "web_720p",
        "prores_master",
    } <= names
    assert "max_duration=140" in vexport("presets", check=True).stdout


def test_submit_places_valid_input_in_the_inbox_and_refuses_bad(home, media, tmp_path):
    manifest = write_manifest(tmp_path / "p", {"id": "sub", "source": str(media["av"]), "targets": [{"preset": "x"}]})
    vexport("submit", manifest, check=True)
    placed = json.loads((home.inbox / "sub.json").read_text())
    assert placed["source"] == str(media["av"]) and placed["targets"] == [{"preset": "x"}]
    bad = write_manifest(
        tmp_path / "p", {"source": str(media["av"]), "targets": [{"preset": "x", "fps": "fast"}]}, "bad.yaml"
    )
    proc = vexport("submit", bad)
    assert proc.returncode == 2 and "targets[0].fps" in proc.stderr
    assert sorted(p.name for p in home.inbox.iterdir() if p.is_file()) == ["sub.json"]
    assert vexport("--help").returncode == 0 and vexport("export", "--help").returncode == 0


def test_a_validation_failure_is_summarised_in_vexport_words(home, media, tmp_path):
    """The blocking check's failure reached the summary as `dagster._core.errors.DagsterAssetCheckFailedError: 1
    blocking asset check failed with ERROR severity`."""
    presets = tmp_path / "presets.yaml"
    presets.write_text("mono_only:\n  base: web_720p\n  limits: {max_channels: 1}\n")  # known only once encoded
    manifest = write_manifest(
        tmp_path / "proj",
        {"id": "two-channels", "source": str(media["av"]), "segments": [{"start": 0, "end": 1}],
         "validation": {"quality": "off"}, "targets": [{"preset": "mono_only", "quality": "draft"}]},
    )  # fmt: skip
    out = tmp_path / "out.json"
    proc = vexport("export", manifest, "--json", out, env={"VEXPORT_PRESETS": str(presets)})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert [e["code"] for e in data["errors"]] == ["validation_failed"]
    assert "dagster" not in json.dumps(data["errors"]).lower() and "dagster" not in proc.stdout.lower()


def test_a_recording_whose_sound_changes_format_is_delivered_whole(home, media, tmp_path):
    """Stereo 48 kHz then 5.1 44.1 kHz in one MPEG-TS (the change at 3 s), beside a second sound track that starts
    0.5 s before the pictures and the first: FFmpeg rebuilt its filter graph at the change and the export came out
    with the part after it missing. `source` now reads a copy whose sound keeps one format; the copy lacks the
    second track, so it starts 0.5 s later, and the cut is still made at the source's times. The summary still
    describes the user's file."""
    lavfi = ["-f", "lavfi", "-i"]
    codecs = ["-map", "0", "-map", "1", "-map", "2", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25"]
    tracks = ["-c:a", "aac", "-disposition:a:0", "default", "-disposition:a:1", "0", "-f", "mpegts"]
    first = ffmpeg_make(
        tmp_path / "1.ts", "-itsoffset", "0.5", *lavfi, "testsrc2=s=640x360:r=25:d=2.5", "-itsoffset", "0.5",
        *lavfi, "sine=f=440:r=48000:d=2.5", *lavfi, "sine=f=880:r=48000:d=3", *codecs, "-ac", "2", *tracks,
    )  # fmt: skip
    second = ffmpeg_make(
        tmp_path / "2.ts", *lavfi, "testsrc2=s=640x360:r=25:d=2", *lavfi, "sine=f=660:r=44100:d=2",
        *lavfi, "sine=f=880:r=48000:d=2", *codecs, "-ac:a:0", "6", "-ac:a:1", "2", "-output_ts_offset", "3", *tracks,
    )  # fmt: skip
    src = media["dir"] / "programmes.ts"
    src.write_bytes(first.read_bytes() + second.read_bytes())
    manifest = write_manifest(
        tmp_path / "proj",
        {"id": "programmes", "source": str(src), "segments": [{"start": 2, "end": 4}],
         "targets": [{"preset": "web_720p", "quality": "draft"}]},
    )  # fmt: skip
    out = tmp_path / "out.json"
    proc = vexport("export", manifest, "--json", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["status"] == "delivered" and data["source"]["audio_codec"] == "aac"
    assert data["source"]["duration"] == pytest.approx(5.0, abs=0.05)
    (r,) = data["renditions"]
    assert passed(r["validation"]) and r["duration"] == pytest.approx(2.0, abs=0.05)
    got = probe(r["path"])
    assert got.audio.duration == pytest.approx(2.0, abs=0.05) and abs(count_frames(r["path"])[0] - 50) <= 1
    with av.open(r["path"]) as c:
        frames = list(c.decode(audio=0))
    sound, rate = np.concatenate([f.to_ndarray()[0] for f in frames]), frames[0].sample_rate
    # 2.55-2.95 s of the source: still the first programme (cut at the copy's times, it was 3.05-3.45 s, the second)
    assert tone_hz(sound[int(0.55 * rate) : int(0.95 * rate)], rate) == pytest.approx(440, abs=5)
    assert tone_hz(sound[int(1.1 * rate) : int(1.9 * rate)], rate) == pytest.approx(660, abs=5)  # 3.1-3.9 s
