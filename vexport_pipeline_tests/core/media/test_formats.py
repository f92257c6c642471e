"""Every format, codec, rate, resolution and fit mode, encoded for real and probed (short clips keep it fast)."""

from fractions import Fraction

import av
import numpy as np
import pytest

from vexport_pipeline.core.media.probe import count_frames, probe
from vexport_pipeline.core.media.render import render_clip
from vexport_pipeline.core.media.timeline import Clip
from vexport_pipeline.core.spec.composition import Target
from vexport_pipeline.core.spec.presets import PresetBook
from vexport_pipeline.core.validation.checks import check_file

SHORT = Clip(None, [(0.0, 0.4)])


def encode(src, tmp_path, targets, clip=SHORT):
    info = probe(src)
    book = PresetBook.load()
    ss = [book.resolve(Target(**t), info) for t in targets]
    outs = [tmp_path / f"{i}.{s.ext}" for i, s in enumerate(ss)]
    render_clip(info, clip, ss, outs)
    return ss, [probe(o) for o in outs], outs


def tag(path) -> str:
    with av.open(str(path)) as c:
        return c.streams.video[0].codec_context.codec_tag


def test_codecs_and_containers(media, tmp_path):
    ss, outs, paths = encode(
        media["av"],
        tmp_path,
        [
            {"format": "mp4", "video_codec": "h264", "resolution": "320x180", "quality": "draft"},
            {"format": "mp4", "video_codec": "h265", "resolution": "320x180", "quality": "draft"},
            {"format": "mov", "video_codec": "h264", "resolution": "320x180", "quality": "draft"},
            {"format": "webm", "video_codec": "vp8", "resolution": "320x180", "quality": "draft"},
            {"format": "webm", "video_codec": "vp9", "resolution": "320x180", "quality": "draft"},
            {"format": "mp4", "video_codec": "av1", "resolution": "320x180", "quality": "draft"},
        ],
    )
    assert [(o.video.codec, o.audio.codec) for o in outs] == [
        ("h264", "aac"),
        ("hevc", "aac"),
        ("h264", "aac"),
        ("vp8", "opus"),
        ("vp9", "opus"),
        ("av1", "aac"),
    ]
    assert tag(paths[1]) == "hvc1"  # plays in Safari/QuickTime
    assert outs[2].format_name.startswith("mov") and paths[2].suffix == ".mov"
    for o, p in zip(outs, paths):
        assert (o.video.width, o.video.height) == (320, 180) and o.video.pix_fmt == "yuv420p"
        assert count_frames(p)[0] == 10
    assert outs[0].faststart and outs[1].faststart and outs[2].faststart


PRORES = [
    ("proxy", "Proxy", "yuv422p1"),
    ("lt", "LT", "yuv422p1"),
    ("standard", "Standard", "yuv422p1"),
    ("hq", "HQ", "yuv422p1"),
    ("4444", "4444", "yuva444p1"),
    ("4444xq", "XQ", "yuva444p1"),
]


def test_prores_profiles_pixel_formats_and_pcm(media, tmp_path):
    ss, outs, paths = encode(
        media["av"],
        tmp_path,
        [{"format": "mov", "video_codec": "prores", "profile": p, "resolution": "320x180"} for p, _, _ in PRORES],
    )
    for (profile, name, pix), o, p, s in zip(PRORES, outs, paths, ss):
        assert o.format_name.startswith("mov") and o.video.codec == "prores"
        assert name in o.video.profile, (profile, o.video.profile)
        assert o.video.pix_fmt.startswith(pix), (profile, o.video.pix_fmt)  # 4:2:2 10-bit; 4444 decodes as 12-bit
        report = check_file(p, s, expected_duration=0.4, source_has_audio=True)
        assert report.status == "pass", report.issues
        assert o.audio.codec in ("pcm_s24le",) and o.audio.sample_rate == 48000
    sizes = [p.stat().st_size for p in paths]
    assert sizes[0] < sizes[1] < sizes[2] < sizes[3]  # proxy < lt < standard < hq


def test_prores_master_preset(media, tmp_path):
    _, [o], _ = encode(media["av"], tmp_path, [{"preset": "prores_master"}])
    assert o.video.codec == "prores" and "HQ" in o.video.profile and (o.video.width, o.video.height) == (640, 360)


RATES = ["23.976", "24", "25", "29.97", "30", "50", "59.94", "60"]


def test_every_frame_rate(media, tmp_path):
    _, outs, paths = encode(
        media["av"],
        tmp_path,
        [{"format": "mp4", "resolution": "160x90", "quality": "draft", "fps": r} for r in RATES],
        clip=Clip(None, [(0.0, 1.0)]),
    )
    for r, o, p in zip(RATES, outs, paths):
        exact = Fraction(r).limit_denominator(1001)
        exact = {"23.976": Fraction(24000, 1001), "29.97": Fraction(30000, 1001), "59.94": Fraction(60000, 1001)}.get(
            r, exact
        )
        assert Fraction(o.video.fps_exact) == exact, (r, o.video.fps_exact)
        assert abs(count_frames(p)[0] - float(exact)) <= 1


def test_large_resolutions_and_source(media, tmp_path):
    _, outs, _ = encode(
        media["av"],
        tmp_path,
        [{"format": "mp4", "resolution": r, "quality": "draft"} for r in ("1440p", "4k", "8k", "source")],
        clip=Clip(None, [(0.0, 0.12)]),
    )
    assert [(o.video.width, o.video.height) for o in outs] == [(2560, 1440), (3840, 2160), (7680, 4320), (640, 360)]
    assert all(o.video.sar == "1" for o in outs)


def first_frame_gray(path):
    with av.open(str(path)) as c:
        return next(c.decode(video=0)).to_ndarray(format="gray").astype(float)


@pytest.mark.parametrize("fit", ["pad", "crop", "blur"])
def test_fit_modes_make_a_vertical_video(media, tmp_path, fit):
    _, [o], [p] = encode(
        media["av"], tmp_path, [{"format": "mp4", "resolution": "270x480", "fit": fit, "quality": "draft"}]
    )
    assert (o.video.width, o.video.height) == (270, 480) and o.video.sar == "1"
    img = first_frame_gray(p)
    top, middle = img[:60].mean(), img[220:260].mean()
    if fit == "pad":  # letterbox: black bars above and below the picture
        assert top < 20 and middle > 40
    elif fit == "crop":  # the picture fills the frame
        assert top > 40
    else:  # blurred picture behind: not black, and smoother than the sharp picture in the middle
        assert top > 20
        assert np.abs(np.diff(img[:60], axis=1)).mean() < np.abs(np.diff(img[220:260], axis=1)).mean()


def test_custom_crf_and_bitrate(media, tmp_path):
    ss, outs, paths = encode(
        media["av"],
        tmp_path,
        [
            {"format": "mp4", "resolution": "640x360", "crf": 40},
            {"format": "mp4", "resolution": "640x360", "crf": 20},
            {"format": "mp4", "resolution": "640x360", "video_bitrate": "400k"},
        ],
        clip=Clip(None, [(0.0, 4.0)]),
    )
    assert paths[0].stat().st_size < paths[1].stat().st_size
    kbps = outs[2].video.bit_rate / 1000
    assert 250 < kbps < 560, kbps  # lands near the 400k asked for


def test_every_preset_encodes_to_its_spec(media, tmp_path):
    """All built-in presets from one decode of a short clip: codec, size, pix_fmt, faststart, edit list, validation."""
    book = PresetBook.load()
    info = probe(media["av"])
    names = book.names()
    ss = [
        book.resolve(Target(preset=n, quality="draft") if n != "prores_master" else Target(preset=n), info)
        for n in names
    ]
    outs = [tmp_path / f"{n}.{s.ext}" for n, s in zip(names, ss)]
    clip = Clip(None, [(0.0, 0.4)])
    render_clip(info, clip, ss, outs)
    for n, s, p in zip(names, ss, outs):
        got = probe(p)
        assert got.video.codec == {"h264": "h264", "prores": "prores"}[s.video_codec], n
        assert (got.video.width, got.video.height) == (s.width, s.height), n
        if s.container == "mp4":
            assert got.faststart and got.video.pix_fmt == "yuv420p", n
            assert got.extra["edit_list"] is (not s.limits.get("no_edit_list")), n
        report = check_file(p, s, expected_duration=0.4, source_has_audio=True, quality="off")
        assert not [i for i in report.issues if i.severity == "error" and i.code not in ("too_short",)], (
            n,
            report.issues,
        )
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
    } <= set(names)
