"""Per-owner limits through the real CLI: a broken owners file is refused naming the file and the field;
`submit` refuses an owner at their hourly rate, saying when the next slot opens (the queue's intake: `vexport
export` runs in its caller's process, outside the queue, and is not rate-limited); `export` refuses what would
take an owner past their storage quota, naming what is stored, the estimate and the quota."""

import json
import time

from pydantic import ByteSize

from vexport_pipeline.core.media.probe import probe
from vexport_pipeline.core.planning import estimate_bytes, plan_export
from vexport_pipeline.core.spec.loading import load_composition
from vexport_pipeline_tests.conftest import vexport, write_manifest


def manifest(folder, media, export_id: str, owner: str = "alice"):
    return write_manifest(
        folder,
        {"id": export_id, "owner": owner, "source": str(media["av"]), "segments": [{"start": 0, "end": 1}],
         "targets": [{"format": "mp4", "video_codec": "h264", "resolution": "640x360", "crf": 28}]},
        name=f"{export_id}.yaml",
    )  # fmt: skip


def owners_file(tmp_path, monkeypatch):
    path = tmp_path / "owners.yaml"
    monkeypatch.setenv("VEXPORT_OWNERS", str(path))  # for the CLI processes and the plan checked here alike
    return path


def test_submit_refuses_an_owner_at_their_hourly_rate_and_a_broken_owners_file(home, media, tmp_path, monkeypatch):
    owners = owners_file(tmp_path, monkeypatch)
    owners.write_text("default: {exports_per_hour: 1}\nalice: {exports_per_hour: 1, concurent: 2}\n")
    broken = vexport("submit", manifest(tmp_path, media, "one"))
    assert broken.returncode == 2, broken.stdout + broken.stderr
    assert f"{owners} (VEXPORT_OWNERS): alice.concurent: unknown key (did you mean 'concurrent'?)" in broken.stderr
    assert "Traceback" not in broken.stderr and not list(home.inbox.iterdir())

    owners.write_text("default: {exports_per_hour: 1}\n")
    first = vexport("submit", manifest(tmp_path, media, "one"))
    assert first.returncode == 0, first.stdout + first.stderr
    second = vexport("submit", manifest(tmp_path, media, "two"))
    assert second.returncode == 2, second.stdout + second.stderr
    opens = time.strftime("%H:%M", time.localtime((home.inbox / "one.json").stat().st_mtime + 3600))
    assert (
        "error: owner alice: 1 export(s) in the last hour reach the limit of 1 an hour (exports_per_hour); the next"
        f" slot opens at {opens} (in 60 min)"
    ) in second.stderr
    assert sorted(p.name for p in home.inbox.iterdir()) == ["one.json"]
    other = vexport("submit", manifest(tmp_path, media, "three", owner="bob"))  # the limit is per owner
    assert other.returncode == 0, other.stdout + other.stderr


def test_export_refuses_past_the_quota(home, media, tmp_path, monkeypatch):
    owners = owners_file(tmp_path, monkeypatch)
    owners.write_text("alice: {quota: 1GB}\n")
    first = vexport("export", manifest(tmp_path, media, "first"), "--json", tmp_path / "first.json")
    assert first.returncode == 0, first.stdout + first.stderr
    stored = sum(p.stat().st_size for p in home.store.joinpath("first").rglob("*") if p.is_file())
    delivered = json.loads((tmp_path / "first.json").read_text())["renditions"][0]["size_bytes"]
    second = manifest(tmp_path, media, "second")
    comp = load_composition(second)
    plan = plan_export(comp, probe(media["av"]))
    estimate = estimate_bytes(list(plan.targets), plan.timeline)
    assert delivered < estimate  # an upper estimate: the same target over the same second

    owners.write_text(f"alice: {{quota: {stored + estimate - 1}}}\n")  # one byte short
    refused = vexport("export", second, "--json", tmp_path / "second.json")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    [error] = json.loads((tmp_path / "second.json").read_text())["errors"]
    human = [ByteSize(n).human_readable(decimal=True) for n in (stored, estimate, stored + estimate - 1)]
    assert error["code"] == "quota_exceeded"
    assert error["message"].startswith(
        f"owner alice: {human[0]} stored + about {human[1]} for this export is over the quota of {human[2]}"
    )
    assert not home.store.joinpath("second").exists()
    owners.write_text(f"alice: {{quota: {stored + estimate}}}\n")  # exactly fits: it would be taken
    assert plan_export(comp, probe(media["av"])).targets
