"""Bare videos dropped in the inbox, as cameras, recorders and old phones name them."""

from vexport_pipeline.core.intake import inbox
from vexport_pipeline.core.settings import current
from vexport_pipeline_tests.conftest import ffmpeg_make


def test_camera_and_recorder_files_are_taken_and_other_files_left_alone(home, media):
    """An AVCHD camera's .m2ts, a DVD's .mpg and a MiniDV capture's .dv stayed in the inbox for ever: the sensor
    looked only for .mp4, .mov, .m4v, .mkv, .webm, .avi, .mxf, .ts and .mts. A note beside them is left alone."""
    av = str(media["av"])
    ffmpeg_make(home.inbox / "00001.m2ts", "-i", av, "-c", "copy", "-f", "mpegts", "-mpegts_m2ts_mode", "1")
    ffmpeg_make(home.inbox / "vts_01_1.mpg", "-i", av, "-t", "2", "-c:v", "mpeg2video", "-c:a", "mp2", "-f", "mpeg")
    ffmpeg_make(home.inbox / "tape.dv", "-i", av, "-t", "2", "-target", "pal-dv")
    (home.inbox / "notes.txt").write_text("cut the intro\n")
    accepted, rejected, held = inbox.process(home, current().policy, min_age_s=0)
    assert sorted(a.file for a in accepted) == ["00001.m2ts", "tape.dv", "vts_01_1.mpg"], rejected
    assert not rejected and not held
    assert (home.inbox / "notes.txt").is_file() and sorted(p.name for p in home.inbox.iterdir()) == ["notes.txt"]
    # and `vexport inbox` says why it stays
    [row] = inbox.listing(home)["pending"]
    assert row["file"] == "notes.txt" and row["reason"].startswith("left alone: not a composition (.json")
    assert ".m2ts" in row["reason"]
