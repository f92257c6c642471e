"""Download analytics on a hand-built request log whose answers are known: a video player's range
requests counted once, an abandoned download, refusals, HEAD requests and a link nobody used."""

import io
import json
from datetime import UTC, datetime

import pandas as pd
import pytest

from vexport_pipeline.core.delivery.analytics import (
    DAILY_COLUMNS,
    charts,
    daily_rollup,
    export_metrics,
    link_metrics,
    owner_rollup,
)

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC).timestamp()
DAY = 86_400
VIDEO = "teaser__youtube_1080p.mp4"  # 1000 bytes
VERTICAL = "teaser__tiktok.mp4"  # 500 bytes
BUNDLE = "teaser.zip"
ALICE = {"client_ip": "203.0.113.5", "country": "US", "browser": "Chrome", "os": "Windows", "device": "desktop"}
BOB = {"client_ip": "198.51.100.9", "country": "GB", "browser": "Mobile Safari", "os": "iOS", "device": "mobile"}
SCRIPT = {"client_ip": "198.51.100.9", "country": "", "browser": "curl", "os": "Other", "device": "tool"}
INTRUDER = {"client_ip": "192.0.2.66", "country": "FR", "browser": "Firefox", "os": "Linux", "device": "desktop"}
UNFURLER = {"client_ip": "192.0.2.77", "country": "US", "browser": "Slackbot", "os": "Other", "device": "bot"}


def req(
    at, link, rendition, who, *, method="GET", status=200, sent=0, rng="", completed=0, referrer="", export="teaser"
):
    return {
        "at": T0 + at,
        "link_id": link,
        "export_id": export,
        "version": "v1",
        "rendition": rendition,
        "method": method,
        "status": status,
        "bytes": sent,
        "range": rng,
        "completed": completed,
        **who,
        "referrer": referrer,
        "user_agent": "...",
    }


@pytest.fixture
def requests():
    return pd.DataFrame(
        [
            # Alice's browser plays the video: a HEAD, a probe, a partial read, the rest (complete), then a seek back
            req(0, "LA", VIDEO, ALICE, method="HEAD"),
            req(1, "LA", VIDEO, ALICE, status=206, sent=2, rng="bytes=0-1"),
            req(2, "LA", VIDEO, ALICE, status=206, sent=600, rng="bytes=0-"),
            req(5, "LA", VIDEO, ALICE, status=206, sent=400, rng="bytes=600-", completed=1),
            req(9, "LA", VIDEO, ALICE, status=206, sent=500, rng="bytes=500-"),
            # Bob starts the same file on his phone and gives up
            req(60, "LA", VIDEO, BOB, sent=300),
            # refused: wrong IP (the error page's bytes are not the file), then rate-limited
            req(70, "LA", VIDEO, INTRUDER, status=403, sent=120),
            req(71, "LA", VIDEO, INTRUDER, status=429),
            # a chat app unfurls the link: HEAD only
            req(80, "LA", VIDEO, UNFURLER, method="HEAD"),
            # the vertical cut: Alice from a mail link, a script from Bob's address the next day
            req(3600, "LB", VERTICAL, ALICE, sent=500, completed=1, referrer="https://mail.google.com/mail/u/0/"),
            req(DAY + 60, "LB", VERTICAL, SCRIPT, sent=500, completed=1),
            # another export, which must never leak into teaser's numbers
            req(120, "LP", "promo__youtube_1080p.mp4", BOB, sent=700, completed=1, export="promo"),
        ]
    )


@pytest.fixture
def links():
    def link(id_, rendition, created, export="teaser", max_downloads=None, revoked=0):
        return {
            "id": id_,
            "export_id": export,
            "version": "v1",
            "rendition": rendition,
            "created_at": T0 - 600 + created,
            "expires_at": T0 + 7 * DAY,
            "max_downloads": max_downloads,
            "revoked": revoked,
        }

    return pd.DataFrame(
        [
            link("LA", VIDEO, 0, max_downloads=10),
            link("LB", VERTICAL, 1),
            link("LZ", BUNDLE, 2, revoked=1),  # nobody used it
            link("LP", "promo__youtube_1080p.mp4", 3, export="promo"),
        ]
    ).astype({"max_downloads": "Int64"})


def _only_plain_json(value):
    if isinstance(value, dict):
        return all(isinstance(k, str) and _only_plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_only_plain_json(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


def test_metrics_count_each_download_once_and_in_the_contract_shape(requests, links):
    m = export_metrics("teaser", requests, links)
    json.dumps(m, allow_nan=False)
    assert _only_plain_json(m)  # no numpy scalars anywhere
    assert m["export_id"] == "teaser"
    by_name = {r["name"]: r for r in m["renditions"]}
    assert list(by_name) == sorted([VIDEO, VERTICAL, BUNDLE])
    assert by_name[VIDEO] == {
        "name": VIDEO,
        "downloads": 1,  # five requests of Alice's player, one download
        "requests": 9,  # every row: HEADs and refusals too
        "bytes_served": 2 + 600 + 400 + 500 + 300,  # 2xx only: not the 403's error page
        "unique_clients": 2,  # Alice and Bob; not the refused client, not the HEAD-only unfurler
        "completion_rate": 0.5,  # Alice finished, Bob abandoned
        "countries": {"US": 1},
        "devices": {"desktop": 1},
        "browsers": {"Chrome": 1},
        "referrers": {"direct": 1},
        "first_download": "2026-03-01T10:00:05Z",
        "last_download": "2026-03-01T10:00:05Z",
        "links": 1,
    }
    vertical = by_name[VERTICAL]
    assert (vertical["downloads"], vertical["requests"], vertical["bytes_served"]) == (2, 2, 1000)
    assert vertical["unique_clients"] == 2 and vertical["completion_rate"] == 1.0
    assert vertical["countries"] == {"US": 1, "unknown": 1}
    assert vertical["devices"] == {"desktop": 1, "tool": 1}
    assert vertical["referrers"] == {"direct": 1, "mail.google.com": 1}
    assert (vertical["first_download"], vertical["last_download"]) == ("2026-03-01T11:00:00Z", "2026-03-02T10:01:00Z")


def test_a_rendition_with_links_but_no_requests_shows_zeros(requests, links):
    bundle = next(r for r in export_metrics("teaser", requests, links)["renditions"] if r["name"] == BUNDLE)
    assert bundle["links"] == 1
    assert (bundle["downloads"], bundle["requests"], bundle["bytes_served"], bundle["unique_clients"]) == (0, 0, 0, 0)
    assert bundle["completion_rate"] is None
    assert bundle["countries"] == bundle["devices"] == bundle["browsers"] == bundle["referrers"] == {}
    assert bundle["first_download"] is None and bundle["last_download"] is None


def test_totals_sum_counts_and_union_clients(requests, links):
    t = export_metrics("teaser", requests, links)["totals"]
    assert "name" not in t
    assert (t["downloads"], t["requests"], t["bytes_served"], t["links"]) == (3, 11, 2802, 3)
    assert t["unique_clients"] == 2  # Alice and Bob's address, on both renditions
    assert t["completion_rate"] == 0.75  # (LA, Alice), (LB, Alice), (LB, Bob's address) of four attempts
    assert t["countries"] == {"US": 2, "unknown": 1}
    assert t["devices"] == {"desktop": 2, "tool": 1}
    assert (t["first_download"], t["last_download"]) == ("2026-03-01T10:00:05Z", "2026-03-02T10:01:00Z")


def test_metrics_of_an_export_nobody_touched():
    m = export_metrics("fresh", pd.DataFrame(), pd.DataFrame())
    assert m["renditions"] == []
    assert m["totals"]["downloads"] == 0 and m["totals"]["completion_rate"] is None
    json.dumps(m, allow_nan=False)


def test_link_metrics_one_row_per_link(requests, links):
    df = link_metrics("teaser", requests, links)
    assert list(df["link_id"]) == ["LA", "LB", "LZ"]
    la, lb, lz = (df.iloc[i].to_dict() for i in range(3))
    assert (la["downloads"], la["requests"], la["completion_rate"], la["max_downloads"]) == (1, 9, 0.5, 10)
    assert lb["downloads"] == 2 and pd.isna(lb["max_downloads"])
    assert lz["revoked"] is True and lz["requests"] == 0 and pd.isna(lz["last_download"])


def test_daily_rollup(requests):
    df = daily_rollup(requests)
    assert list(df.columns) == DAILY_COLUMNS
    rows = {(r.day, r.export_id, r.rendition): r for r in df.itertuples()}
    video = rows[("2026-03-01", "teaser", VIDEO)]
    assert (video.downloads, video.requests, video.bytes_served, video.unique_clients) == (1, 9, 1802, 2)
    first = rows[("2026-03-01", "teaser", VERTICAL)]
    second = rows[("2026-03-02", "teaser", VERTICAL)]
    assert (first.downloads, first.requests, first.bytes_served, first.unique_clients) == (1, 1, 500, 1)
    assert (second.downloads, second.requests, second.bytes_served, second.unique_clients) == (1, 1, 500, 1)
    assert rows[("2026-03-01", "promo", "promo__youtube_1080p.mp4")].downloads == 1
    assert len(df) == 4
    assert df["downloads"].sum() == 4  # every download in exactly one day


def test_daily_rollup_of_nothing_has_the_columns():
    df = daily_rollup(pd.DataFrame())
    assert df.empty and list(df.columns) == DAILY_COLUMNS


def test_owner_rollup(requests):
    exports = pd.DataFrame(
        [
            {"export_id": "teaser", "owner": "alice", "preset": "youtube_1080p", "rendition": VIDEO},
            {"export_id": "teaser", "owner": "alice", "preset": "tiktok", "rendition": VERTICAL},
            {"export_id": "promo", "owner": "bob", "preset": "youtube_1080p", "rendition": "promo__youtube_1080p.mp4"},
            {"export_id": "quiet", "owner": None, "preset": "vimeo", "rendition": "quiet__vimeo.mp4"},
        ]
    )
    out = owner_rollup(requests, exports)
    owners = out["owners"].set_index("owner")
    assert owners.loc["alice", ["exports", "renditions", "downloads", "bytes_served"]].tolist() == [1, 2, 3, 2802]
    assert owners.loc["bob", "downloads"] == 1 and owners.loc["(none)", "downloads"] == 0
    assert list(out["owners"]["owner"]) == ["alice", "bob", "(none)"]  # most downloaded first
    presets = out["presets"].set_index("preset")
    assert presets.loc["youtube_1080p", ["exports", "renditions", "downloads"]].tolist() == [2, 2, 2]
    assert presets.loc["youtube_1080p", "downloads_per_export"] == 1.0
    assert presets.loc["tiktok", "downloads"] == 2 and presets.loc["vimeo", "downloads"] == 0
    with pytest.raises(ValueError, match="rendition"):
        owner_rollup(requests, exports.drop(columns=["rendition"]))


def _png(data: bytes):
    from matplotlib import image

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return image.imread(io.BytesIO(data), format="png")


def test_charts_of_downloads(requests):
    out = charts(requests, title="teaser")
    assert set(out) == {"downloads_over_time", "by_country_device"}
    for data in out.values():
        assert _png(data).shape[:2] == (300, 800)


def test_charts_over_weeks_and_many_countries(requests):
    many = pd.DataFrame(
        [
            req(i * DAY, "LA", VIDEO, {**ALICE, "country": cc, "client_ip": f"203.0.113.{i}"}, sent=1000, completed=1)
            for i, cc in enumerate(["US", "GB", "FR", "DE", "JP", "BR", "IN", "CA", "AU", "ES", "IT", ""])
        ]
    )
    for data in charts(many).values():
        assert _png(data).shape[:2] == (300, 800)


@pytest.mark.parametrize("frame", [pd.DataFrame(), "no completed rows"])
def test_charts_without_downloads_are_readable_images(requests, frame):
    if isinstance(frame, str):
        frame = requests[requests["completed"] == 0]
    out = charts(frame)
    for data in out.values():
        pixels = _png(data)
        assert pixels.shape[:2] == (300, 800)
        assert pixels[..., :3].min() < 0.9  # the "no downloads yet" text is drawn, not a blank image
