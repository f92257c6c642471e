"""Brand rules per owner, from the YAML file named by `VEXPORT_BRANDS` (owner -> rules)."""

from __future__ import annotations

from pathlib import Path

import yaml

from vexport_pipeline.core.errors import InputError
from vexport_pipeline.core.settings import current
from vexport_pipeline.core.validation.verdict import Issue

from .context import CheckContext

KNOWN = {"min_height", "min_width", "max_video_bitrate", "forbidden_codecs", "loudness_lufs", "containers", "min_vmaf"}


def load_brands(path: str | Path | None = None) -> dict:
    path = path or current().brands_file
    if not path:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read brand rules: {exc}", where=str(path), code="brands_invalid") from None
    for owner, rules in data.items():
        if not isinstance(rules, dict) or set(rules) - KNOWN:
            raise InputError(
                f"{owner}: rules must be a mapping of {', '.join(sorted(KNOWN))}",
                where=str(path),
                code="brands_invalid",
            )
    return data


def brand_rules(ctx: CheckContext) -> list[Issue]:
    rules, info, v, a, out = ctx.brand, ctx.info, ctx.v, ctx.a, []
    if not rules:
        return out
    if v and (lo := rules.get("min_height")) and min(v.display_width, v.display_height) < lo:
        out.append(
            ctx.error(
                "brand_min_resolution",
                f"{v.display_width}x{v.display_height} is under the brand's {lo}p minimum",
                f"export at {lo}p or more",
            )
        )
    if v and (lo := rules.get("min_width")) and v.display_width < lo:
        out.append(
            ctx.error(
                "brand_min_resolution",
                f"{v.display_width} px wide, under the brand's {lo}",
                f"export at least {lo} px wide",
            )
        )
    if v and (cap := rules.get("max_video_bitrate")) and (v.bit_rate or 0) > cap:
        out.append(
            ctx.error(
                "brand_max_bitrate",
                f"video at {v.bit_rate / 1e6:.1f} Mb/s, over the brand's {cap / 1e6:.1f}",
                "lower the quality tier or set video_bitrate",
            )
        )
    forbidden = rules.get("forbidden_codecs", [])
    if v and v.codec in {c.replace("h265", "hevc") for c in forbidden}:
        out.append(
            ctx.error("brand_forbidden_codec", f"{v.codec} is forbidden by the brand rules", "pick another video_codec")
        )
    if a and a.codec in forbidden:
        out.append(
            ctx.error(
                "brand_forbidden_codec", f"{a.codec} audio is forbidden by the brand rules", "pick another audio_codec"
            )
        )
    if (allowed := rules.get("containers")) and not set(info.format_name.split(",")) & set(allowed):
        out.append(
            ctx.error(
                "brand_container",
                f"container {info.format_name} is not one of {', '.join(allowed)}",
                "pick an allowed format",
            )
        )
    return out
