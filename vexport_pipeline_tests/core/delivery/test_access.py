"""The link rules without HTTP: signing keys that rotate, who the client is behind proxies, who may use a
link, and the download sessions that count a download once and reserve `max_downloads` slots."""

import time
from pathlib import Path

import pytest

from vexport_pipeline.core.delivery import access
from vexport_pipeline.core.delivery.events import LinkRow, merge
from vexport_pipeline.core.delivery.links import LinkSigner
from vexport_pipeline.gateway.limits import RateLimiter


def row(**kw) -> LinkRow:
    base = {"id": "l1", "export_id": "e", "version": "v", "rendition": "a.mp4", "path": "/x", "created_at": 0}
    return LinkRow(**({**base, "expires_at": time.time() + 60} | kw))


def test_keys_rotate_without_breaking_live_links_and_dropping_a_key_kills_its_links():
    old = LinkSigner("old-key").sign("l1", time.time() + 60)
    ring = LinkSigner(["old-key", "new-key"])
    assert ring.verify(old) == "l1"
    new = ring.sign("l2", time.time() + 60)
    assert LinkSigner("new-key").verify(new) == "l2"  # the newest key signs
    with pytest.raises(ValueError, match="forged"):
        LinkSigner("new-key").verify(old)
    with pytest.raises(ValueError, match="expired"):
        ring.verify(ring.sign("l3", time.time() - 1))
    for junk in ["", "x" * 600, new[:-2] + "AA", "e30.x", "../../etc/passwd"]:
        with pytest.raises(ValueError, match="forged"):
            ring.verify(junk)


@pytest.mark.parametrize(
    "peer, xff, trusted, expected",
    [
        ("203.0.113.7", "10.0.0.1", [], "203.0.113.7"),  # an untrusted peer's header is ignored
        ("127.0.0.1", "198.51.100.2", ["127.0.0.1/32"], "198.51.100.2"),
        ("127.0.0.1", "10.0.0.1, 198.51.100.2", ["127.0.0.1/32"], "198.51.100.2"),  # the nearest hop
        ("127.0.0.1", "198.51.100.2, 10.0.0.5", ["127.0.0.1/32", "10.0.0.0/8"], "198.51.100.2"),
        ("127.0.0.1", "garbage", ["127.0.0.1/32"], "127.0.0.1"),
        ("::ffff:192.0.2.1", None, [], "192.0.2.1"),  # IPv4-mapped IPv6 is the IPv4 it carries
        ("2001:db8::1", None, [], "2001:db8::1"),
        ("not-an-ip", None, [], ""),
    ],
)
def test_the_client_address_is_only_taken_from_trusted_proxies(peer, xff, trusted, expected):
    assert access.client_address(peer, xff, access.networks(trusted)) == expected


def test_who_may_use_a_link():
    assert access.refuse(row(), "198.51.100.1", "") is None
    assert access.refuse(row(revoked=True), "198.51.100.1", "").status == 410
    assert access.refuse(row(expires_at=time.time() - 1), "198.51.100.1", "").status == 410
    nets = row(allow_ips=("10.0.0.0/8", "2001:db8::/32"))
    assert access.refuse(nets, "10.2.3.4", "") is None and access.refuse(nets, "2001:db8::5", "") is None
    assert access.refuse(nets, "::ffff:10.2.3.4", "") is None
    assert access.refuse(nets, "11.0.0.1", "").status == 403 and access.refuse(nets, "", "").status == 403
    de = row(countries=("DE",))
    assert access.refuse(de, "1.1.1.1", "de") is None and access.refuse(de, "1.1.1.1", "US").status == 403
    with pytest.raises(ValueError, match="allow_ips: 'nope'"):
        access.networks(["nope"])


def test_only_regular_files_inside_the_store_are_served(tmp_path):
    store = tmp_path / "store"
    (store / "e").mkdir(parents=True)
    good = store / "e" / "a.mp4"
    good.write_bytes(b"x")
    (tmp_path / "secret").write_text("s")
    (store / "e" / "link").symlink_to(tmp_path / "secret")
    assert access.inside(good, (store,)) == good.resolve()
    for bad in [tmp_path / "secret", store / "e" / "link", store / "e", store / "e" / ".." / ".." / "secret",
                Path("/etc/passwd"), store / "missing"]:  # fmt: skip
        assert access.inside(bad, (store,)) is None, bad


def test_ranges_merge_into_coverage():
    assert merge([(10, 20), (0, 10), (15, 30), (40, 50), (5, 5)]) == [(0, 30), (40, 50)]


def test_rate_limits_answer_when_to_come_back():
    limiter = RateLimiter(per_minute=2)
    assert limiter.wait("ip:a", now=0) == 0 and limiter.wait("ip:a", now=1) == 0
    assert limiter.wait("ip:a", now=2) == 58 and limiter.wait("ip:b", now=2) == 0
    assert limiter.wait("ip:a", now=60.5) == 0
    assert RateLimiter(0).wait("x") == 0


def test_a_delivery_to_several_stores_fails_whole_when_one_fails_while_staging(tmp_path):
    from vexport_pipeline.core.delivery.publish import publish_all
    from vexport_pipeline.core.delivery.stores import LocalStore
    from vexport_pipeline.core.errors import StorageError

    class Broken(LocalStore):
        def put(self, v, name, src):
            raise StorageError("the bucket went away", where=v.export_id)

    src = tmp_path / "a.mp4"
    src.write_bytes(b"video")
    good, bad = LocalStore(tmp_path / "good"), Broken(tmp_path / "bad")
    with pytest.raises(StorageError, match="went away"):
        publish_all({"default": good, "s3": bad}, "e", {"a.mp4": src}, bundle="e.zip", work=tmp_path)
    for store in (good, bad):
        assert store.current("e") is None and not list(store.root.glob(".staging/*"))
    assert not (tmp_path / "e.zip").exists()
    done = publish_all({"default": good}, "e", {"a.mp4": src}, bundle=None, work=tmp_path)
    assert good.current("e") == done.versions["default"]
