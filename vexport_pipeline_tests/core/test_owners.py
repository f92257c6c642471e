"""The owners file (VEXPORT_OWNERS): every kind of mistake refused naming the file and the field; an owner's
entry over `default` over the built-ins; the hourly rate counts every registration, re-exports too, and says
when the next slot opens."""

import time

import pytest

from vexport_pipeline.core import owners
from vexport_pipeline.core.errors import ConfigError, RateLimited
from vexport_pipeline.core.intake import registry
from vexport_pipeline.core.spec.loading import parse_composition


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("alice: {concurent: 5}\n", "alice.concurent: unknown key (did you mean 'concurrent'?)"),
        ("alice: {colour: red}\n", "alice.colour: unknown key (allowed: concurrent, exports_per_hour, quota)"),
        ("alice: {quota: 50XB}\n", "alice.quota: '50XB' is not a size such as 500MB, 50GB or 1TiB, or 'unlimited'"),
        ("default: {concurrent: 0}\n", "default.concurrent: Input should be greater than or equal to 1"),
        ("bob: {exports_per_hour: many}\n", "bob.exports_per_hour: Input should be a valid integer"),
        ("alice: 5\n", "alice: must be a mapping of concurrent, exports_per_hour, quota"),
        ("'-bad name': {concurrent: 1}\n", "'-bad name': not an owner name"),
        ("- alice\n", "must map owners to limits, not list"),
        ("alice: {quota: [\n", "not valid YAML"),
    ],
)
def test_a_broken_owners_file_is_refused_naming_the_file_and_the_field(tmp_path, text, needle):
    path = tmp_path / "owners.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        owners.load(path)
    assert str(err.value).startswith(f"{path} (VEXPORT_OWNERS): ") and needle in str(err.value)
    assert err.value.exit_code == 2


def test_a_missing_owners_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the owners file"):
        owners.load(tmp_path / "nowhere.yaml")


def test_an_owner_entry_over_default_over_the_built_ins(tmp_path):
    path = tmp_path / "owners.yaml"
    path.write_text(
        "default: {exports_per_hour: 20, quota: 1GiB, concurrent: 2}\n"
        "alice: {quota: 50GB, concurrent: 5}\nbob: {quota: unlimited}\n"
    )
    book = owners.load(path)
    assert book.limits("alice") == owners.Limits(exports_per_hour=20, quota=50 * 10**9)
    assert book.limits("bob") == owners.Limits(exports_per_hour=20, quota=None)
    assert book.limits("carol") == book.limits(None) == owners.Limits(exports_per_hour=20, quota=2**30)
    assert book.own_concurrency() == {"alice": 5}
    assert owners.Owners().limits("anyone") == owners.Limits(exports_per_hour=10, quota=None)


def test_every_registration_counts_against_the_hourly_rate(home, media, tmp_path, monkeypatch):
    """Three registrations of one export id (an export and two re-exports): the record is replaced, the rate
    counts all three; the next slot opens an hour after the oldest that must age out."""
    (tmp_path / "owners.yaml").write_text("alice: {exports_per_hour: 2}\n")
    monkeypatch.setenv("VEXPORT_OWNERS", str(tmp_path / "owners.yaml"))
    comp = parse_composition({"id": "again", "owner": "alice", "source": "x.mp4", "targets": [{"preset": "web_720p"}]})
    times = [registry.register(home, comp, media["av"]).registered_at for _ in range(3)]
    assert len(list(home.registry.glob("*.json"))) == 1
    usage = owners.Usage.read(home)
    usage.check("bob")  # another owner is not held back
    with pytest.raises(RateLimited) as err:
        usage.check("alice")
    assert err.value.code == "rate_limited" and err.value.opens_at == times[1] + 3600
    assert "3 export(s) in the last hour reach the limit of 2 an hour" in str(err.value)
    later = owners.Usage.read(home, now=(times[1] + times[2]) / 2 + 3600)  # the first two have aged out
    later.check("alice")
    later.add("alice")
    with pytest.raises(RateLimited, match=time.strftime("opens at %H:%M", time.localtime(times[2] + 3600))):
        later.check("alice")


def test_the_size_estimate_takes_each_targets_peak_or_its_size_cap():
    """ProRes at its profile's data rate; H.264 at its peak bitrate; a platform's file-size cap bounds its file."""
    from vexport_pipeline.core.planning import estimate_bytes, plan_export
    from vexport_pipeline_tests.core.test_planning import SOURCE

    def estimate(target: dict, seconds: float = 60) -> int:
        comp = parse_composition(
            {"id": "e", "source": "m.mp4", "segments": [{"start": 0, "end": seconds}], "targets": [target]}
        )
        plan = plan_export(comp, SOURCE)
        return estimate_bytes(list(plan.targets), plan.timeline)

    proxy, xq = (estimate({"preset": "prores_master", "profile": p}) for p in ("proxy", "4444xq"))
    assert 300e6 < proxy < xq < 4e9  # 1080p30 for a minute: ~45 Mb/s and ~500 Mb/s, with PCM audio
    bitrate = estimate({"format": "mp4", "video_codec": "h264", "resolution": "1080p", "video_bitrate": "8M"})
    assert bitrate == pytest.approx(60 * (12e6 + 192e3) / 8, rel=1e-3)  # two-pass cap 1.5x the bitrate, AAC
    square = estimate({"preset": "instagram_feed_square"})  # 25 Mb/s for a minute would be 189 MB
    assert square == 100 * 10**6  # the platform's cap
