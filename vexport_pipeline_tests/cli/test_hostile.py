"""Hostile input through the real commands (click's runner, in-process, so 60+ cases stay fast): each is
refused with exit 2, the message names the field or file, the `--json` summary is written, and nothing is
left behind (no media, no work files, no FFmpeg). Cases that could hang (FIFOs) run under a timeout."""

import json
import os
import shutil
import signal
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from vexport_pipeline.cli import main
from vexport_pipeline.core.settings import ffmpeg_exe
from vexport_pipeline_tests.conftest import running_ffmpeg

GOOD_TARGET = {"preset": "web_720p"}


def _ffmpeg(*args):
    import subprocess

    subprocess.run([ffmpeg_exe(), "-v", "error", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, media):
    """A folder of bad files the manifests point at, and one VEXPORT_HOME for the whole module."""
    d = tmp_path_factory.mktemp("hostile")
    (d / "text.mp4").write_text("just some text\n" * 50)
    (d / "playlist.mp4").write_text("#EXTM3U\n#EXTINF:10,\nhttp://127.0.0.1:9/seg.ts\n")
    (d / "concat.mp4").write_text("ffconcat version 1.0\nfile '/etc/passwd'\n")
    (d / "empty.mp4").write_bytes(b"")
    os.mkfifo(d / "fifo.mp4")
    os.mkfifo(d / "fifo.yaml")
    (d / "folder.mp4").mkdir()
    (d / "loop.mp4").symlink_to(d / "loop.mp4")
    (d / "passwd.mp4").symlink_to("/etc/passwd")
    shutil.copy(media["av"], d / "good.mp4")
    full = d / "full.mp4"
    _ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=4", "-c:v", "libx264", "-preset", "ultrafast",
        "-movflags", "+faststart", str(full),
    )  # fmt: skip
    (d / "truncated.mp4").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    parts = []
    for n, offset in enumerate((0, 36000)):  # a recorder restarting: the second part's clock is 10 hours on
        parts.append(d / f"part{n}.ts")
        _ffmpeg(
            "-f", "lavfi", "-i", "testsrc2=s=320x180:r=25:d=1", "-c:v", "libx264", "-preset", "ultrafast",
            "-output_ts_offset", offset, "-f", "mpegts", parts[-1],
        )  # fmt: skip
    (d / "jump.ts").write_bytes(b"".join(p.read_bytes() for p in parts))
    return d


def run(args, env, timeout=60):
    """The CLI in-process; a hang fails the test instead of stalling the suite."""

    def stuck(*_):
        raise TimeoutError(f"vexport {' '.join(map(str, args))} hung for {timeout} s")

    old = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(timeout)
    try:
        return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture
def env(tmp_path_factory, media, hostile, monkeypatch):
    home = tmp_path_factory.getbasetemp() / "hostile-home"
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return {"VEXPORT_HOME": str(home), "VEXPORT_MEDIA_ROOTS": f"{media['dir']}:{hostile}", "DAGSTER_HOME": None}


def manifest_case(name, data, needle, *, ext="yaml", raw=None, env_extra=None):
    return pytest.param(data, needle, ext, raw, env_extra or {}, id=name)


SEG = [{"start": 0, "end": 1}]
M = {"id": "bad", "source": "SRC", "targets": [GOOD_TARGET]}


def m(**over):
    return {**M, **over}


def t(**over):
    return m(targets=[{**GOOD_TARGET, **over}])


def fmt(**over):
    return m(targets=[{"format": "mp4", "video_codec": "h264", "resolution": "720p", **over}])


CASES = [
    # the manifest file itself
    manifest_case("yaml-syntax", None, "not valid YAML", raw="id: [unclosed\n"),
    manifest_case("yaml-duplicate-key", None, "key 'id' is given twice", raw="id: a\nid: b\nsource: x\n"),
    manifest_case("json-duplicate-key", None, "key 'id' is given twice", ext="json", raw='{"id": "a", "id": "b"}'),
    manifest_case("yaml-deep-nesting", None, "nested", raw="a: " + "[" * 20000 + "]" * 20000 + "\n"),
    manifest_case("json-deep-nesting", None, "nested", ext="json", raw="[" * 20000 + "]" * 20000),
    manifest_case(
        "yaml-alias-bomb",
        None,
        "more than 200000 values",
        raw="a: &a [x,x,x,x,x,x,x,x,x,x]\n"
        + "".join(
            f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n" for p, c in zip("abcdefgh", "bcdefghi")
        ),
    ),
    manifest_case("yaml-python-tag", None, "not valid YAML", raw="source: !!python/object/apply:os.system ['true']\n"),
    manifest_case("huge-manifest", None, "more than 1048576", raw="# " + "x" * (1 << 20) + "\n"),
    manifest_case("not-utf8", None, "not UTF-8", raw=b"\xff\xfe\x00source: x"),
    manifest_case("empty-manifest", None, "expected a mapping", raw=""),
    manifest_case("top-level-list", None, "expected a mapping", raw="- a\n- b\n"),
    manifest_case("unknown-key", m(tagrets=[]), "unknown key (did you mean 'targets'?)"),
    # the source path
    manifest_case("source-nul-byte", m(source="good\0.mp4"), "NUL byte"),
    manifest_case("source-long-name", m(source="x" * 300 + ".mp4"), "does not exist or is not a file"),
    manifest_case("source-symlink-loop", m(source="loop.mp4"), "Symlink loop"),
    manifest_case("source-http", m(source="http://127.0.0.1:9/a.mp4"), "URLs are not allowed"),
    manifest_case("source-file-url", m(source="file:///etc/passwd"), "URLs are not allowed"),
    manifest_case("source-s3", m(source="s3://bucket/key.mp4"), "is not under a destination that allows sources"),
    manifest_case("source-dotdot", m(source="../../../../../etc/passwd"), "outside the allowed media folders"),
    manifest_case("source-absolute-outside", m(source="/etc/passwd"), "outside the allowed media folders"),
    manifest_case("source-symlink-out", m(source="passwd.mp4"), "outside the allowed media folders"),
    manifest_case("source-fifo", m(source="fifo.mp4"), "not a file"),
    manifest_case("source-folder", m(source="folder.mp4"), "not a file"),
    manifest_case("source-missing", m(source="nope.mp4"), "does not exist"),
    manifest_case("source-text", m(source="text.mp4"), "text.mp4"),
    manifest_case("source-hls-playlist", m(source="playlist.mp4"), "playlist.mp4"),
    manifest_case("source-ffconcat", m(source="concat.mp4"), "concat.mp4"),
    manifest_case("source-empty", m(source="empty.mp4"), "empty.mp4"),
    manifest_case("source-truncated", m(source="truncated.mp4"), "truncated.mp4 is truncated"),
    manifest_case("source-ts-timestamp-jump", m(source="jump.ts"), "the timestamps jump from 00:00:01.000 to 10:00"),
    # segments and caps
    manifest_case("segment-reversed", m(segments=[{"start": 2, "end": 1}]), "segments[0]: start"),
    manifest_case("segment-1ms", m(segments=[{"start": 1, "end": 1.001}]), "segments[0]"),
    manifest_case("segment-beyond-end", m(segments=[{"start": 1, "end": 60}]), "segments[0]"),
    manifest_case("segment-negative", m(segments=[{"start": -1, "end": 1}]), "segments[0].start"),
    manifest_case("segments-overlap", m(segments=[{"start": 0, "end": 2}, {"start": 1, "end": 3}]), "segments[1]"),
    manifest_case(
        "segments-over-cap",
        m(export_type="clips", segments=[{"start": i * 0.2, "end": i * 0.2 + 0.1} for i in range(501)]),
        "segments: 501 segments, more than the 500 allowed",
    ),
    manifest_case(
        "segments-over-configured-cap",
        m(export_type="clips", segments=[{"start": 0, "end": 1}, {"start": 1, "end": 2}, {"start": 2, "end": 3}]),
        "VEXPORT_MAX_SEGMENTS",
        env_extra={"VEXPORT_MAX_SEGMENTS": "2"},
    ),
    manifest_case("targets-over-cap", m(targets=[GOOD_TARGET] * 33), "targets: 33 targets"),
    manifest_case(
        "clip-ids-differ-only-in-case",
        m(
            export_type="clips",
            segments=[{"start": 0, "end": 1, "clip_id": "Intro"}, {"start": 1, "end": 2, "clip_id": "intro"}],
        ),
        "clip_id 'intro' is used more than once",
    ),
    manifest_case("single-with-two-segments", m(export_type="single", segments=SEG * 2), "a single export takes one"),
    manifest_case(
        "crossfade-on-clips", m(export_type="clips", transitions={"crossfade": 0.5}), "transitions.crossfade"
    ),
    manifest_case("work-budget", m(targets=[GOOD_TARGET]), "VEXPORT_MAX_WORK", env_extra={"VEXPORT_MAX_WORK": "0.01"}),
    # target values
    manifest_case("crf-0-h264", fmt(crf=0), "targets[0].crf: 0 is outside h264's range 1-51"),
    manifest_case("crf-70", fmt(crf=70), "targets[0].crf"),
    manifest_case("crf-52-h264", fmt(crf=52), "targets[0].crf: 52 is outside"),
    manifest_case("crf-prores", m(targets=[{"format": "mov", "video_codec": "prores", "crf": 20}]), "targets[0].crf"),
    manifest_case("bitrate-1", fmt(video_bitrate=1), "targets[0].video_bitrate: 1 b/s is outside"),
    manifest_case("bitrate-huge", fmt(video_bitrate="999999999M"), "targets[0].video_bitrate"),
    manifest_case("bitrate-text", fmt(video_bitrate="fast"), "targets[0].video_bitrate"),
    manifest_case("resolution-16384", fmt(resolution="16384x16384"), "targets[0].resolution: 16384x16384 is larger"),
    manifest_case("resolution-odd", fmt(resolution="321x241"), "targets[0].resolution: 321x241 has an odd side"),
    manifest_case("resolution-5k", fmt(resolution="5k"), "targets[0].resolution"),
    manifest_case("resolution-tiny", fmt(resolution="8x8"), "targets[0].resolution"),
    manifest_case("fps-1000", fmt(fps=1000), "targets[0].fps"),
    manifest_case("fps-zero", fmt(fps=0), "targets[0].fps"),
    manifest_case("vmaf-and-crf", fmt(vmaf=93, crf=20), "give a vmaf target, or crf/video_bitrate"),
    manifest_case(
        "vmaf-on-prores", m(targets=[{"format": "mov", "video_codec": "prores", "vmaf": 90}]), "ProRes has no"
    ),
    manifest_case("codec-in-wrong-container", fmt(format="webm"), "targets[0].video_codec: h264 cannot go in webm"),
    manifest_case("unknown-preset", t(preset="myspace"), "targets[0].preset"),
    manifest_case("profile-on-h264", fmt(profile="hq"), "targets[0].profile"),
    manifest_case("loudness-out-of-range", m(audio={"normalize": True, "target_lufs": 10}), "audio.target_lufs"),
    # delivery and identity
    manifest_case("link-ttl-huge", m(delivery={"link_ttl": 1000000000000}), "delivery.link_ttl"),
    manifest_case("max-downloads-huge", m(delivery={"max_downloads": 10**12}), "delivery.max_downloads"),
    manifest_case("allow-ips-bad", m(delivery={"allow_ips": ["10.0.0.300"]}), "delivery.allow_ips"),
    manifest_case("destination-unknown", m(delivery={"destinations": ["s3main"]}), "delivery.destinations[0]"),
    manifest_case("id-path", m(id="../etc"), "id"),
    manifest_case("id-slash", m(id="a/b"), "id"),
    manifest_case("owner-slash", m(owner="../x"), "owner"),
]


@pytest.mark.parametrize("data,needle,ext,raw,env_extra", CASES)
def test_hostile_manifest_is_refused_cleanly(hostile, env, tmp_path, request, data, needle, ext, raw, env_extra):
    path = hostile / f"{request.node.callspec.id}.{ext}"  # beside the bad files its source names
    if raw is not None:
        path.write_bytes(raw if isinstance(raw, bytes) else raw.encode())
    else:
        data = {**data, "source": "good.mp4" if data["source"] == "SRC" else data["source"]}
        path.write_text(json.dumps(data))  # JSON is YAML too
    out = tmp_path / "summary.json"
    result = run(["export", path, "--json", out], {**env, **env_extra})
    text = result.output
    if os.environ.get("SHOW"):
        print(f"\n[{request.node.callspec.id}] {text.strip().splitlines()[-1]}")
    assert result.exit_code == 2, text
    assert needle in text, text
    assert "Traceback" not in text
    summary = json.loads(out.read_text())
    assert summary["status"] == "refused" and needle in summary["errors"][0]["message"]
    home = Path(env["VEXPORT_HOME"])
    for folder_name in ("store", "work"):
        leftovers = [p for p in (home / folder_name).rglob("*") if p.is_file()] if (home / folder_name).exists() else []
        assert leftovers == [], leftovers
    assert running_ffmpeg() == []


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder", "missing"])
def test_manifest_that_is_not_a_regular_file_is_refused_at_once(hostile, env, tmp_path, kind):
    path = {
        "fifo": hostile / "fifo.yaml",
        "dev-zero": Path("/dev/zero"),
        "folder": hostile / "folder.mp4",
        "missing": tmp_path / "nope.yaml",
    }[kind]
    out = tmp_path / "summary.json"
    result = run(["export", path, "--json", out], env, timeout=20)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    if kind != "folder":  # click refuses a folder before vexport reads anything
        assert json.loads(out.read_text())["status"] == "refused"
        assert str(path) in result.output or path.name in result.output


@pytest.mark.parametrize("kind", ["fifo", "folder", "missing", "symlink-loop"])
def test_validate_refuses_what_is_not_a_regular_file_without_hanging(hostile, env, tmp_path, kind):
    path = {"fifo": "fifo.mp4", "folder": "folder.mp4", "missing": "nope.mp4", "symlink-loop": "loop.mp4"}[kind]
    result = run(["validate", hostile / path, "--preset", "web_720p"], env, timeout=20)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and path in result.output


def test_validate_of_a_truncated_file_is_a_fail_report(hostile, env, tmp_path):
    out = tmp_path / "report.json"
    result = run(["validate", hostile / "truncated.mp4", "--preset", "web_720p", "--json", out], env)
    assert result.exit_code == 1, result.output
    assert json.loads(out.read_text())["status"] == "fail"


def test_the_hostile_folder_is_what_the_cases_think(hostile):
    """The fixtures are what their names say (a case that cannot fail is no test)."""
    assert stat.S_ISFIFO(os.lstat(hostile / "fifo.mp4").st_mode)
    assert os.path.islink(hostile / "passwd.mp4") and os.path.islink(hostile / "loop.mp4")
    assert (hostile / "truncated.mp4").stat().st_size < (hostile / "full.mp4").stat().st_size
    assert len(CASES) >= 60
