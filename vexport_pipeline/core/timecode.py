"""Times and durations as users write them: seconds, HH:MM:SS(.mmm), MM:SS, and TTLs like 24h."""

from __future__ import annotations

import math
import re
from fractions import Fraction

_CLOCK = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")
_TTL = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw]?)$")
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(value: object) -> float:
    """Seconds from a number or 'HH:MM:SS(.mmm)' / 'MM:SS(.mmm)' / '12.5'."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a time; use seconds or HH:MM:SS.mmm")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if m := _CLOCK.match(text):
            hours, minutes, secs = int(m.group(1) or 0), int(m.group(2)), float(m.group(3))
            if minutes >= 60 or secs >= 60:
                raise ValueError(f"{value!r} has minutes or seconds of 60 or more")
            seconds = hours * 3600 + minutes * 60 + secs
        else:
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(f"{value!r} is not a time; use seconds or HH:MM:SS.mmm") from None
    else:
        raise ValueError(f"{value!r} is not a time; use seconds or HH:MM:SS.mmm")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} must be a finite time of 0 or more")
    return round(seconds, 6)


def parse_ttl(value: object) -> int:
    """Seconds from '24h', '30d', '90m', '45s' or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (m := _TTL.match(value.strip().lower())):
        seconds = float(m.group(1)) * _TTL_UNITS[m.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration; use e.g. 45s, 90m, 24h, 30d")
    if seconds <= 0:
        raise ValueError(f"{value!r} must be longer than zero")
    return int(seconds)


def parse_fps(value: object) -> str:
    """Canonical frame rate text: 'source', an integer, or 'num/den' (29.97 -> 30000/1001)."""
    if isinstance(value, str) and value.strip().lower() == "source":
        return "source"
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a frame rate")
    try:
        rate = Fraction(str(value).strip()) if isinstance(value, str) else Fraction(value)
    except (ValueError, ZeroDivisionError, TypeError):
        raise ValueError(f"{value!r} is not a frame rate; use a number such as 25 or 29.97, or 'source'") from None
    # The NTSC family is written rounded (23.976, 29.97, 59.94): map it to its exact rational.
    for ntsc in (24, 30, 60, 120):
        exact = Fraction(ntsc * 1000, 1001)
        if rate != ntsc and abs(float(rate) - float(exact)) < 0.006:
            rate = exact
    if not (1 <= rate <= 240):
        raise ValueError(f"{value!r} is outside 1-240 fps")
    rate = rate.limit_denominator(1001)
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"


def fmt_clock(seconds: float) -> str:
    """12.5 -> '00:00:12.500' for messages."""
    ms = int(round(seconds * 1000))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"
