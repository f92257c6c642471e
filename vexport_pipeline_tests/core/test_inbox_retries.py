"""A file that fails in the inbox for a reason that can pass stays there and is tried again on the next passes
(up to inbox.TRIES in all) instead of being moved to rejected/ for good: CI once saw a healthy video refused as
"truncated or damaged" because the FFmpeg of its plan-time decode check had been killed. Real manifests, media and
FFmpeg processes; the signal that stops them is sent by the test."""

import errno
import json
import os
import threading

import pytest

from vexport_pipeline.core.intake import inbox, registry
from vexport_pipeline.core.media import runner
from vexport_pipeline.core.settings import current
from vexport_pipeline_tests.conftest import killed_at_once


def killed_checks(monkeypatch, passes: list[bool]):
    """Every decode check's FFmpeg is started for real and SIGKILLed at once while `passes[0]` is true."""
    real = runner.capture

    def capture(argv, **kw):
        return killed_at_once(argv) if passes[0] and "null" in argv else real(argv, **kw)

    monkeypatch.setattr(runner, "capture", capture)


def test_a_file_whose_check_is_killed_stays_in_the_inbox_and_is_taken_once_the_check_runs(home, media, monkeypatch):
    (home.inbox / "a.yaml").write_text(f"id: a\nsource: {media['av']}\ntargets: [{{preset: web_720p}}]\n")
    killing = [True]
    killed_checks(monkeypatch, killing)
    for attempt in (1, 2):
        accepted, rejected, held = inbox.process(home, current().policy, min_age_s=0)
        assert not accepted and not rejected
        [h] = held
        assert h.file == "a.yaml" and not h.waiting
        assert "stopped by SIGKILL twice" in h.reason and f"tried {attempt} of 3 times" in h.reason, h.reason
        assert (home.inbox / "a.yaml").is_file() and not (home.inbox / "rejected").exists()
    # what `vexport inbox` shows while it waits
    [row] = inbox.listing(home)["pending"]
    assert row["file"] == "a.yaml" and row["reason"].startswith("tried 2 of 3 times: ")

    killing[0] = False
    accepted, rejected, held = inbox.process(home, current().policy, min_age_s=0)
    assert [a.record.export_id for a in accepted] == ["a"] and not rejected and not held
    assert (home.inbox / "accepted" / "a.yaml").is_file()
    assert json.loads((home.inbox / ".retries.json").read_text()) == {}  # nothing left to try again


def test_a_file_that_keeps_failing_is_refused_after_its_third_try_with_the_reason(home, media, monkeypatch):
    video = home.inbox / "clip.mp4"
    video.write_bytes(media["av"].read_bytes())
    killed_checks(monkeypatch, [True])
    for _ in range(2):
        assert inbox.process(home, current().policy, min_age_s=0)[1] == []
    accepted, rejected, held = inbox.process(home, current().policy, min_age_s=0)
    assert not accepted and not held
    [r] = rejected
    assert r.file == "clip.mp4" and "stopped by SIGKILL twice" in r.error and "(tried 3 times)" in r.error
    assert not video.exists()
    reason = (home.inbox / "rejected" / "clip.mp4.error.txt").read_text()
    assert "tried 3 times" in reason


def test_a_replaced_file_starts_again_and_a_bad_one_is_refused_at_once(home, media, monkeypatch):
    """An unexpected failure (here the disk full when the export is registered) counts a try; the same name
    written again is a new file with its own tries; a file that is wrong in itself is refused on its first pass."""
    real, full = registry.register, [True]

    def register(*args, **kwargs):
        if full[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(registry, "register", register)
    manifest = home.inbox / "b.yaml"
    manifest.write_text(f"id: b\nsource: {media['av']}\ntargets: [{{preset: web_720p}}]\n")
    (home.inbox / "bad.yaml").write_text(f"id: bad\nsource: {media['av']}\ntargets: [{{preset: no_such}}]\n")
    for _ in range(2):
        accepted, rejected, held = inbox.process(home, current().policy, min_age_s=0)
        assert [h.file for h in held] == ["b.yaml"] and "No space left on device" in held[0].reason
    assert [r.file for r in rejected] == [] and (home.inbox / "rejected" / "bad.yaml").is_file()

    manifest.write_text(manifest.read_text() + "# edited\n")  # replaced: its tries start again
    accepted, rejected, held = inbox.process(home, current().policy, min_age_s=0)
    assert not rejected and "tried 1 of 3 times" in held[0].reason

    # a bare video is moved under the media root when it is registered: back in the inbox when that fails
    video = home.inbox / "clip.mp4"
    video.write_bytes(media["av"].read_bytes())
    accepted, rejected, held = inbox.process(home, current().policy, min_age_s=0)
    assert sorted(h.file for h in held) == ["b.yaml", "clip.mp4"] and video.is_file()

    full[0] = False
    accepted, rejected, held = inbox.process(home, current().policy, min_age_s=0)
    assert sorted(a.record.export_id for a in accepted) == ["b", "clip"] and not rejected and not held
    assert not video.exists() and (home.media / "inbox" / "clip" / "clip.mp4").is_file()


def test_a_pass_that_cannot_write_its_tries_still_ends_well(home, media, monkeypatch):
    """The tries are kept in a file in the inbox; where it cannot be written (here its name is taken by a folder,
    as a full disk would stop it) the pass still returns what it did, and the file is tried again."""
    killed_checks(monkeypatch, [True])
    (home.inbox / "c.yaml").write_text(f"id: c\nsource: {media['av']}\ntargets: [{{preset: web_720p}}]\n")
    (home.inbox / ".retries.json").mkdir()
    for _ in range(3):  # uncounted, so never refused
        accepted, rejected, held = inbox.process(home, current().policy, min_age_s=0)
        assert not accepted and not rejected and "tried 1 of 3 times" in held[0].reason
    assert [p.name for p in home.inbox.iterdir() if p.name.startswith(".retries")] == [".retries.json"]


@pytest.mark.parametrize("planted", ["fifo", "symlink", "tmp-symlink"])
def test_a_tries_file_planted_in_the_inbox_neither_hangs_the_pass_nor_writes_elsewhere(
    planted, home, media, tmp_path, monkeypatch
):
    """Anyone who may drop files in the inbox can leave a FIFO under the tries file's name (reading it would wait
    for a writer forever) or a link to a file elsewhere (writing through it would overwrite that file)."""
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me\n")
    tries = home.inbox / ".retries.json"
    if planted == "fifo":
        os.mkfifo(tries)
    else:  # the file itself, or the name an earlier version wrote it under first
        (tries if planted == "symlink" else home.inbox / ".retries.json.tmp").symlink_to(outside)
    (home.inbox / "d.yaml").write_text(f"id: d\nsource: {media['av']}\ntargets: [{{preset: web_720p}}]\n")
    killed_checks(monkeypatch, [True])  # held, so the tries are written
    done: list = []
    worker = threading.Thread(target=lambda: done.append(inbox.process(home, current().policy, min_age_s=0)))
    worker.start()
    worker.join(60)
    assert done, "the pass hung on the planted tries file"
    assert [h.file for h in done[0][2]] == ["d.yaml"]
    assert outside.read_text() == "keep me\n" and tries.is_file() and not tries.is_symlink()


def test_the_shared_file_helpers_refuse_folders_and_links_and_keep_the_usual_mode(tmp_path):
    """`read_text_file` gave a folder to `os.fdopen`, whose IsADirectoryError escaped its InputError; without
    `follow_links` a link is refused too. `write_atomically` creates its hidden file (mkstemp), never opening a name
    someone may have planted, and gives the result the mode an ordinary write would."""
    from vexport_pipeline.core.errors import InputError
    from vexport_pipeline.core.files import read_text_file, write_atomically

    (tmp_path / "folder.json").mkdir()
    with pytest.raises(InputError, match="not a regular file"):
        read_text_file(tmp_path / "folder.json", 100, "the tries")
    (tmp_path / "real.json").write_text("{}")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    assert read_text_file(tmp_path / "link.json", 100, "the tries") == "{}"
    with pytest.raises(InputError, match="cannot read the tries"):
        read_text_file(tmp_path / "link.json", 100, "the tries", follow_links=False)
    write_atomically(tmp_path / "out.json", "[1]")
    plain = tmp_path / "plain.json"
    plain.write_text("[1]")
    assert (tmp_path / "out.json").read_text() == "[1]"
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "folder.json",
        "link.json",
        "out.json",
        "plain.json",
        "real.json",
    ]
