"""Sources real users have: interlaced broadcast, HDR (PQ and HLG, BT.2020, 10-bit), 4:2:2 10-bit
ProRes and DNxHR masters, several audio tracks, MPEG-TS with a start offset. Each comes out progressive,
SDR BT.709 and tagged so, in sync and at the timeline's duration."""

import subprocess

import av
import numpy as np
import pytest

from vexport_pipeline.core.media.probe import check_decodable_to, probe
from vexport_pipeline.core.media.render import can_copy, render_clip
from vexport_pipeline.core.media.timeline import Clip
from vexport_pipeline.core.settings import ffmpeg_exe
from vexport_pipeline.core.spec.composition import Target
from vexport_pipeline.core.spec.presets import PresetBook
from vexport_pipeline.core.validation.analyze import analyze
from vexport_pipeline_tests.conftest import ffmpeg_make, killed_at_once

TONE = ["-f", "lavfi", "-i", "sine=f=440:d=2:r=48000"]
HDR = "zscale=tin=bt709:t={t}:pin=bt709:p=bt2020:min=bt709:m=bt2020nc:npl=100,format=yuv420p10le"
SOURCES = {
    "interlaced.mp4": [
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=720x576:r=50:d=2",
        *TONE,
        "-vf",
        "interlace=scan=tff",
        "-c:v",
        "libx264",
        "-flags",
        "+ildct+ilme",
        "-x264-params",
        "tff=1",
        "-c:a",
        "aac",
    ],
    "pq.mp4": [
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=1280x720:r=25:d=2",
        *TONE,
        "-vf",
        HDR.format(t="smpte2084"),
        "-c:v",
        "libx265",
        "-x265-params",
        "log-level=error",
        "-color_primaries",
        "bt2020",
        "-color_trc",
        "smpte2084",
        "-colorspace",
        "bt2020nc",
        "-c:a",
        "aac",
    ],
    "hlg.mp4": [
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=1280x720:r=25:d=2",
        *TONE,
        "-vf",
        HDR.format(t="arib-std-b67"),
        "-c:v",
        "libx265",
        "-x265-params",
        "log-level=error",
        "-color_primaries",
        "bt2020",
        "-color_trc",
        "arib-std-b67",
        "-colorspace",
        "bt2020nc",
        "-c:a",
        "aac",
    ],
    "prores422.mov": [
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=1280x720:r=25:d=2",
        *TONE,
        "-c:v",
        "prores_ks",
        "-profile:v",
        "3",
        "-pix_fmt",
        "yuv422p10le",
        "-c:a",
        "pcm_s24le",
    ],
    "dnxhr.mov": [
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=1280x720:r=25:d=2",
        *TONE,
        "-c:v",
        "dnxhd",
        "-profile:v",
        "dnxhr_hq",
        "-pix_fmt",
        "yuv422p",
        "-c:a",
        "pcm_s16le",
    ],
    "two_tracks.mp4": [
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=640x360:r=25:d=2",
        "-f",
        "lavfi",
        "-i",
        "anullsrc=r=48000:cl=stereo:d=2",
        *TONE,
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-map",
        "2:a",
        "-c:v",
        "libx264",
        "-c:a",
        "aac",
        "-disposition:a:0",
        "0",
        "-disposition:a:1",
        "default",
    ],
    "offset.ts": [
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=640x360:r=25:d=2",
        *TONE,
        "-c:v",
        "libx264",
        "-x264-params",
        "open-gop=1:bframes=3",
        "-c:a",
        "aac",
        "-output_ts_offset",
        "7.5",
        "-f",
        "mpegts",
    ],
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    d = tmp_path_factory.mktemp("broadcast")
    for name, args in SOURCES.items():
        ffmpeg_make(d / name, *args, "-t", "2")
    return d


def export(path, tmp_path, **target):
    info = probe(path)
    s = PresetBook.load().resolve(Target(**({"preset": "web_720p", "quality": "draft"} | target)), info)
    out = tmp_path / f"out.{s.ext}"
    render_clip(info, Clip(None, [(0.0, 2.0)]), [s], [out])
    return info, s, probe(out), out


def assert_sdr_in_sync(got, info, duration=2.0):
    v, a = got.video, got.audio
    assert (v.color_primaries, v.color_trc, v.color_space) == ("bt709", "bt709", "bt709")
    assert (v.duration or got.duration) == pytest.approx(duration, abs=0.05)
    # sync: the audio/video start offset is the source's own, to within one frame
    source_offset = info.video.start_time - info.audio.start_time
    assert (v.start_time - a.start_time) == pytest.approx(source_offset, abs=1 / v.fps + 0.001)
    assert min(v.start_time, a.start_time) == pytest.approx(0.0, abs=0.001)
    assert a.duration == pytest.approx(duration, abs=0.06)


def test_interlaced_is_detected_and_deinterlaced(sources, tmp_path):
    info, s, got, out = export(sources / "interlaced.mp4", tmp_path)
    assert info.video.interlaced and info.video.field_order == "tff" and s.deinterlace
    assert not got.video.interlaced
    assert_sdr_in_sync(got, info)


@pytest.mark.parametrize("name", ["pq.mp4", "hlg.mp4"])
def test_hdr_is_tone_mapped_to_sdr_bt709(sources, tmp_path, name):
    info, s, got, out = export(sources / name, tmp_path)
    assert info.video.hdr == ("pq" if name == "pq.mp4" else "hlg") and s.tonemap == info.video.hdr
    assert got.video.pix_fmt == "yuv420p"
    assert_sdr_in_sync(got, info)
    with av.open(str(out)) as c:  # a tone-mapped picture uses the SDR range, not a washed-out grey
        luma = np.concatenate([f.to_ndarray(format="gray").ravel() for _, f in zip(range(10), c.decode(video=0))])
    # PQ/HLG codes shown as BT.709 untreated would top out near 127 here (100-nit white)
    assert luma.min() < 40 and luma.max() > 140


@pytest.mark.parametrize("name", ["prores422.mov", "dnxhr.mov"])
def test_422_masters_become_420_web_files(sources, tmp_path, name):
    info, s, got, out = export(sources / name, tmp_path)
    assert "422" in info.video.pix_fmt
    assert got.video.pix_fmt == "yuv420p" and got.video.codec == "h264"
    assert_sdr_in_sync(got, info)


def test_the_default_audio_track_is_the_one_exported(sources, tmp_path):
    info, s, got, out = export(sources / "two_tracks.mp4", tmp_path)
    assert info.audio_streams == 2 and info.audio_index == 1 and s.audio_track == 1
    assert got.audio is not None and analyze(out).integrated_lufs > -40  # the tone, not the silent first track


def test_mpeg_ts_with_a_start_offset(sources, tmp_path):
    info, s, got, out = export(sources / "offset.ts", tmp_path)
    assert info.start_time > 7
    assert_sdr_in_sync(got, info)


@pytest.fixture(scope="module")
def long_gop_ts(tmp_path_factory):
    """4 s of broadcast-like MPEG-TS: open GOPs of 2 s with B-frames, timestamps from 7.5 s."""
    path = tmp_path_factory.mktemp("ts") / "long_gop.ts"
    video = ["-c:v", "libx264", "-preset", "veryfast", "-x264-params", "open-gop=1:keyint=50:bframes=3"]
    args = ["-f", "lavfi", "-i", "testsrc2=s=640x360:r=25:d=4", *TONE[:-1], "sine=f=440:d=4:r=48000", *video]
    return ffmpeg_make(path, *args, "-c:a", "aac", "-output_ts_offset", "7.5", "-f", "mpegts")


def _gray_frames(path) -> list:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="gray", width=160, height=90).astype(float) for f in c.decode(video=0)]


def test_a_long_gop_mpeg_ts_is_not_taken_for_truncated(long_gop_ts):
    """FFmpeg seeks an MPEG-TS by timestamp and lands between keyframes: the last second of this file decoded
    nothing, and a whole, healthy recording was refused as truncated."""
    info = probe(long_gop_ts)
    check_decodable_to(info, info.duration)


def test_a_decode_check_that_is_killed_is_tried_again_before_the_file_is_refused(media, tmp_path, monkeypatch):
    """The plan-time check decodes a source's last selected second in an FFmpeg process. Stopped by a signal (CI saw
    it come back with no picture and nothing on stderr), it refused a healthy file as truncated, and the inbox moved
    the file to rejected/ for good. A stopped check is run again; a truncated file is still refused, saying so."""
    from vexport_pipeline.core.errors import InputError
    from vexport_pipeline.core.media import runner

    real, calls = runner.capture, []

    def killed_once(argv, **kw):  # the first check's FFmpeg is started for real and killed at once
        calls.append(argv)
        return real(argv, **kw) if len(calls) > 1 else killed_at_once(argv)

    monkeypatch.setattr(runner, "capture", killed_once)
    check_decodable_to(probe(media["av"]), 4.0)
    assert len(calls) == 2

    full = media["av"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full[: len(full) // 2])
    monkeypatch.setattr(runner, "capture", real)
    with pytest.raises(InputError) as refused:
        check_decodable_to(probe(cut), 4.0)
    assert refused.value.code == "media_truncated" and "nothing decodes between 00:00:03.000" in str(refused.value)


@pytest.mark.parametrize(("start", "end"), [(0.5, 1.5), (2.5, 3.5)])
def test_a_cut_inside_a_long_gop_mpeg_ts_starts_on_the_picture_asked_for(long_gop_ts, tmp_path, start, end):
    """A cut at 0.5 s began at the next keyframe (2.0 s) and one at 2.5 s decoded nothing (`mmco: unref short
    failure`, FFmpeg exit 234): the cut is read from the keyframe before it and trimmed."""
    info = probe(long_gop_ts)
    s = PresetBook.load().resolve(Target(preset="web_720p", quality="draft", resolution="640x360"), info)
    out = tmp_path / f"cut.{s.ext}"
    render_clip(info, Clip(None, [(start, end)]), [s], [out])
    source, got = _gray_frames(long_gop_ts), _gray_frames(out)
    assert len(got) == 25
    video_start = info.video.start_time - info.start_time
    wanted = round((start - video_start) * 25)
    nearest = min(range(len(source)), key=lambda n: np.abs(source[n] - got[0]).mean())
    assert nearest == wanted
    assert probe(out).audio.duration == pytest.approx(end - start, abs=0.03)


def test_a_recording_cut_mid_gop_keeps_its_sound_before_the_first_picture_and_passes(long_gop_ts, tmp_path):
    """A TS cut between keyframes: its sound starts 0.7 s before its first decodable picture. The gap is kept (the
    picture starts where it started, in sync), and validation counts the frames and the duration after it."""
    from vexport_pipeline.core.validation.checks import check_file

    cut = tmp_path / "mid_gop.ts"
    ffmpeg_make(cut, "-ss", "1.3", "-i", str(long_gop_ts), "-c", "copy", "-f", "mpegts")
    info = probe(cut)
    lead = info.video.start_time - info.audio.start_time
    assert lead > 0.5
    for target in ({"preset": "web_720p", "quality": "draft"}, {"format": "webm", "resolution": "640x360"}):
        s = PresetBook.load().resolve(Target(**target), info)
        out = tmp_path / f"out.{s.ext}"
        clip = Clip(None, [(0.0, info.duration)], cuts_on_keyframes=True)
        render_clip(info, clip, [s], [out])
        report = check_file(
            out, s, expected_duration=clip.duration, source_has_audio=True, source_av_offset_ms=lead * 1000
        )
        assert not [i for i in report.issues if i.severity == "error"], report.issues
        got = probe(out)
        assert got.video.start_time - got.audio.start_time == pytest.approx(lead, abs=0.5 / 25 + 0.001)


def _rgb(path, matrix: str = "auto"):
    """The first picture as RGB, decoded with `matrix` (auto: the file's own tag), 64x36 by area."""
    argv = [ffmpeg_exe(), "-v", "error", "-i", str(path), "-frames:v", "1", "-vf"]
    argv += [f"scale=64:36:in_color_matrix={matrix}:flags=area,format=rgb24", "-f", "rawvideo", "-"]
    return np.frombuffer(subprocess.run(argv, capture_output=True, check=True).stdout, np.uint8).reshape(36, 64, 3)


@pytest.mark.parametrize(
    ("name", "encode"),
    [
        ("bt601.mp4", ["-c:v", "libx264", "-preset", "ultrafast", "-qp", "0"]),  # an SD-era master, tagged
        ("camera.avi", ["-c:v", "mjpeg", "-q:v", "1"]),  # a camera's MJPEG: full range, BT.601 by definition
    ],
)
def test_bt601_and_full_range_sources_keep_their_colours(tmp_path, name, encode):
    """Tagged BT.709 without converting, saturated bars came out 20 to 30 (of 255) off in RGB."""
    src = tmp_path / name
    full = name.endswith(".avi")
    fmt = "yuvj420p" if full else "yuv420p"
    tags = "" if full else ",setparams=colorspace=bt470bg:color_primaries=bt470bg:color_trc=smpte170m:range=tv"
    vf = f"scale=out_color_matrix=bt601:out_range={'pc' if full else 'tv'},format={fmt}{tags}"
    args = ["-f", "lavfi", "-i", "smptehdbars=s=1280x720:r=25:d=1", "-vf", vf, *encode]
    ffmpeg_make(src, *args)
    info = probe(src)
    assert info.video.matrix == "bt601"
    s = PresetBook.load().resolve(Target(preset="web_720p", crf=4), info)
    out = tmp_path / f"out.{s.ext}"
    render_clip(info, Clip(None, [(0.0, 1.0)]), [s], [out])
    assert probe(out).video.color_space == "bt709"
    error = np.abs(_rgb(src, "bt601").astype(int) - _rgb(out).astype(int)).max(axis=2)
    assert np.percentile(error, 90) <= 8, np.percentile(error, 90)


def test_wide_gamut_sdr_sources_are_brought_to_bt709_primaries(tmp_path):
    """SDR in BT.2020 primaries (a 10-bit camera or grading export that is not HDR): its colours are converted, not
    only tagged BT.709. Shown as BT.709 unconverted, saturated bars came out 116 of 255 off (p90)."""
    bars = ["-f", "lavfi", "-i", "smptehdbars=s=1280x720:r=25:d=1"]
    ref, src = tmp_path / "bars709.mp4", tmp_path / "bt2020.mp4"
    lossless = ["-c:v", "libx265", "-x265-params", "lossless=1:log-level=error"]
    tags = ["-color_primaries", "bt2020", "-color_trc", "bt2020-10", "-colorspace", "bt2020nc"]
    wide = "zscale=tin=bt709:t=bt709:pin=bt709:p=bt2020:min=bt709:m=bt2020nc:r=tv,format=yuv420p10le"
    for out, args in ((ref, ["-vf", "format=yuv420p", *lossless]), (src, ["-vf", wide, *lossless, *tags])):
        ffmpeg_make(out, *bars, *args)
    info = probe(src)
    assert info.video.color_primaries == "bt2020" and info.video.hdr is None and info.video.gamut == "bt2020"
    s = PresetBook.load().resolve(Target(preset="web_720p", crf=4), info)
    assert s.primaries == "bt2020" and not s.tonemap
    out = tmp_path / f"out.{s.ext}"
    render_clip(info, Clip(None, [(0.0, 1.0)]), [s], [out])
    got = probe(out).video
    assert (got.color_primaries, got.color_trc, got.color_space) == ("bt709", "bt709", "bt709")
    error = np.abs(_rgb(ref, "bt709").astype(int) - _rgb(out).astype(int)).max(axis=2)
    assert np.percentile(error, 90) <= 8, np.percentile(error, 90)
    # an 8-bit H.264 of the target's size and rate would be stream-copied, and so keep BT.2020 colours
    for primaries, copied in (("bt709", True), ("bt2020", False)):
        h264 = tmp_path / f"{primaries}.mp4"
        tag = f"setparams=color_primaries={primaries}:color_trc=bt709:colorspace=bt709"
        args = ["-vf", f"format=yuv420p,{tag}", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25"]
        subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *bars, *args, str(h264)], check=True)
        info = probe(h264)
        s = PresetBook.load().resolve(Target(preset="web_720p"), info)
        assert can_copy(info, Clip(None, [(0.0, 1.0)], cuts_on_keyframes=True), s) is copied, primaries


@pytest.fixture(scope="module")
def damaged_ts(tmp_path_factory):
    """6 s of MPEG-TS and a copy with 30 kB of noise written over its middle (a bad sector, a dropped satellite
    packet run): FFmpeg decodes the copy with two error lines and conceals the damaged picture."""
    d = tmp_path_factory.mktemp("damaged")
    clean = d / "clean.ts"
    args = ["-f", "lavfi", "-i", "testsrc2=s=640x360:r=25:d=6", "-f", "lavfi", "-i", "sine=d=6", "-c:v", "libx264"]
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args, "-preset", "ultrafast", "-g", "50",
         "-c:a", "aac", "-f", "mpegts", str(clean)],
        check=True,
    )  # fmt: skip
    data = bytearray(clean.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 30_000] = np.random.default_rng(1).integers(0, 256, 30_000, dtype=np.uint8).tobytes()
    (d / "damaged.ts").write_bytes(bytes(data))
    return clean, d / "damaged.ts"


@pytest.mark.parametrize("cut", [(0.0, 6.0), (0.7, 4.5)])
def test_damage_in_the_source_is_reported_where_it_is_though_the_encode_hides_it(damaged_ts, tmp_path, cut):
    """The encode of a damaged source decodes cleanly (FFmpeg filled the picture in), so only a look at the source
    can tell the user that a moment of their export may show blocks; a cut that starts mid-GOP is not damage."""
    from vexport_pipeline.core.validation.checks import check_file

    found = {}
    for path in damaged_ts:
        info, clip = probe(path), Clip(None, [cut])
        s = PresetBook.load().resolve(Target(preset="web_720p", quality="draft"), info)
        out = tmp_path / f"{path.stem}.mp4"
        render_clip(info, clip, [s], [out])
        report = check_file(
            out, s, expected_duration=clip.duration, source_has_audio=True, reference=(info, clip), quality="off"
        )
        found[path.stem] = {i.code: i for i in report.issues}
    assert "source_damaged" not in found["clean"], found["clean"]
    damage = found["damaged"]["source_damaged"]
    assert damage.severity == "warning" and "the source has damaged" in damage.message and "00:00:03." in damage.message
    assert "decode_error" not in found["damaged"]  # the rendition itself decodes cleanly: only this check says it


@pytest.mark.parametrize("start", [0.0, 2.0, 2.1])
def test_damage_just_after_a_keyframe_is_found_by_a_cut_that_starts_there(tmp_path, start):
    """An MPEG-TS with B-frames (x264's default), its payload damaged 0.24 s after the keyframe at 2 s (the TS
    headers kept, as a noisy satellite or a bad sector leaves them). Its seek compares decode timestamps, which
    B-frames put before the keyframe's: a seek aimed at the keyframe landed after it, decoding began at the next one
    (4 s), and the damage of a cut starting at 2.0 or 2.1 s went unreported."""
    from vexport_pipeline.core.media import probe as probing

    clean, damaged = tmp_path / "clean.ts", tmp_path / "damaged.ts"
    args = ["-f", "lavfi", "-i", "testsrc2=s=640x360:r=25:d=6", "-c:v", "libx264", "-preset", "veryfast", "-bf", "2"]
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args, "-g", "50", "-f", "mpegts", str(clean)],
        check=True,
    )
    with av.open(str(clean)) as c:
        v, origin = c.streams.video[0], c.start_time / av.time_base
        assert v.codec_context.has_b_frames
        pos = next(p.pos for p in c.demux(v) if p.pts is not None and float(p.pts * v.time_base) - origin >= 2.2)
    data, rng = bytearray(clean.read_bytes()), np.random.default_rng(1)
    first = pos // 188 * 188 + 188
    for at in range(first, first + 19 * 188, 188):  # 19 TS packets' payloads; their headers (sync, PID) kept
        data[at + 4 : at + 188] = rng.integers(0, 256, 184, dtype=np.uint8).tobytes()
    damaged.write_bytes(bytes(data))

    assert probing.damaged_at(clean, [(start, 6.0)]) == ()
    found = probing.damaged_at(damaged, [(start, 6.0)])
    assert found and all(2.2 <= t < 4.0 for t in found), found


def test_the_checks_of_several_renditions_side_by_side_decode_the_source_once(damaged_ts):
    """Validation checks an export's renditions on as many threads as there are cores, and each asks whether the
    source is damaged: the first decodes it, the others wait for that answer (each decoded it again: B4's
    validation of a 6 s 1080p ladder spent 2.3 CPU-s more)."""
    import threading

    from vexport_pipeline.core.media import probe as probing

    path = damaged_ts[1]
    probing._damaged_at.cache_clear()
    start, answers = threading.Barrier(4), []

    def check():
        start.wait()
        answers.append(probing.damaged_at(path, [(0.0, 6.0)]))

    threads = [threading.Thread(target=check) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 4 and answers[0] and all(a == answers[0] for a in answers)
    assert probing._damaged_at.cache_info().misses == 1, probing._damaged_at.cache_info()
