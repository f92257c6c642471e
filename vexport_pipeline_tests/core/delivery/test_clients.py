"""Who downloaded: user agents into browser / OS / device class, client addresses into countries."""

import time

import pytest

from vexport_pipeline.core.delivery import clients
from vexport_pipeline.core.delivery.clients import DEVICE_CLASSES, Client, country, describe, normalise_ip

CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    " Version/17.4 Mobile/15E148 Safari/604.1"
)
SAFARI_IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    " Version/17.4 Mobile/15E148 Safari/604.1"
)
FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
CHROME_ANDROID_PHONE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/124.0.6367.82 Mobile Safari/537.36"
)
CHROME_ANDROID_TABLET = (
    "Mozilla/5.0 (Linux; Android 12; SM-T870) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
SAFARI_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    " Version/17.4 Safari/605.1.15"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
HEADLESS = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.6367.29 Safari/537.36"
)


@pytest.mark.parametrize(
    ("ua", "browser", "os", "device"),
    [
        (CHROME_WINDOWS, "Chrome", "Windows", "desktop"),
        (SAFARI_IPHONE, "Mobile Safari", "iOS", "mobile"),
        (SAFARI_IPAD, "Mobile Safari", "iOS", "tablet"),
        (FIREFOX_LINUX, "Firefox", "Linux", "desktop"),
        (CHROME_ANDROID_PHONE, "Chrome Mobile", "Android", "mobile"),
        (CHROME_ANDROID_TABLET, "Chrome", "Android", "tablet"),
        (SAFARI_MAC, "Safari", "Mac OS X", "desktop"),
        (GOOGLEBOT, "Googlebot", "Other", "bot"),
        (HEADLESS, "HeadlessChrome", "Linux", "bot"),
        ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", None, "Other", "bot"),
        ("curl/8.5.0", "curl", "Other", "tool"),
        ("Wget/1.21.4", "Wget", "Other", "tool"),
        ("python-requests/2.32.3", None, "Other", "tool"),
        ("python-httpx/0.28.1", None, "Other", "tool"),
        ("", "Other", "Other", "other"),
    ],
)
def test_user_agents_become_browser_os_and_a_device_class(ua, browser, os, device):
    got = describe(ua)
    assert isinstance(got, Client)
    assert got.device == device and got.os == os
    if browser is not None:  # the families of tools and crawlers are ua-parser's data, not ours
        assert got.browser == browser
    assert got.device in DEVICE_CLASSES


@pytest.mark.parametrize("ua", [None, "   ", "\x00\xff\ud800 not a browser", "x" * 10_240, "(((;;;" * 2000])
def test_junk_user_agents_never_raise(ua):
    start = time.monotonic()
    assert describe(ua) == Client("Other", "Other", "other")
    assert time.monotonic() - start < 10  # a regex that backtracks catastrophically takes minutes, not seconds


def test_a_huge_header_is_cut_to_its_first_kibibyte_and_still_read():
    assert describe(CHROME_WINDOWS + " " + "x" * 10_000) == Client("Chrome", "Windows", "desktop")
    assert len(CHROME_WINDOWS) < clients.MAX_USER_AGENT


def test_descriptions_are_cached():
    describe(FIREFOX_LINUX)
    hits = clients._describe.cache_info().hits
    assert describe(FIREFOX_LINUX).browser == "Firefox"
    assert clients._describe.cache_info().hits == hits + 1


@pytest.mark.parametrize(
    ("ip", "cc"),
    [
        ("8.8.8.8", "US"),  # as iptocc 3.3.170's table says
        ("1.0.16.1", "JP"),
        ("2001:4860:4860::8888", "US"),
        ("::ffff:8.8.8.8", "US"),  # IPv4-mapped: looked up as its IPv4 address
        ("::FFFF:1.0.16.1", "JP"),
        (" 8.8.8.8 ", "US"),
        ("[2001:4860:4860::8888]", "US"),
    ],
)
def test_public_addresses_get_their_registry_country(ip, cc):
    assert country(ip) == cc


@pytest.mark.parametrize(
    "ip",
    [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.10",
        "127.0.0.1",
        "100.64.0.1",  # carrier-grade NAT
        "169.254.1.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:10.0.0.1",
        "::ffff:127.0.0.1",
        "garbage",
        "",
        None,
        "999.1.1.1",
        "1.2.3.4.5",
        "x" * 5000,
    ],
)
def test_private_loopback_and_invalid_addresses_have_no_country(ip):
    assert country(ip) == ""


@pytest.mark.parametrize(
    ("ip", "normal"),
    [
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("::ffff:0102:0304", "1.2.3.4"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("[::1]", "::1"),
        (" 203.0.113.7\n", "203.0.113.7"),
        ("not an ip", ""),
        ("", ""),
        (None, ""),
    ],
)
def test_normalise_ip(ip, normal):
    assert normalise_ip(ip) == normal
