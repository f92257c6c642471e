"""Validation of a rendition against its target and platform limits: probe, one full decoding pass
(frames, decode errors, loudness, black and silence), verdict.

Score: 100, minus 30 for each error and 5 for each warning (never below 0). Status: fail with any
error, warn with any warning, else pass. Limits listed as uncertain only ever warn.

A/V offsets follow ITU-R BT.1359 signs: positive means the audio leads. The change from the source's
own offset warns outside -45/+15 ms (ATSC IS-191) and fails outside -125/+45 ms (ITU detectability).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from vexport_pipeline.core.errors import InputError
from vexport_pipeline.core.media.probe import MediaInfo, probe
from vexport_pipeline.core.spec.presets import EncodeSettings

from .analyze import analyze, frame_intervals
from .vmaf import TIER_MIN_VMAF, comparable
from .vmaf import score as score_quality

if TYPE_CHECKING:
    from vexport_pipeline.core.media.timeline import Clip

CODEC_NAMES = {"h264": {"h264"}, "h265": {"hevc"}, "vp8": {"vp8"}, "vp9": {"vp9"}, "av1": {"av1"}, "prores": {"prores"}}
AUDIO_NAMES = {"aac": {"aac"}, "opus": {"opus"}, "pcm": {"pcm_s24le", "pcm_s16le"}}
# What a decoder reports for what we encode: ProRes 4444 decodes as 12-bit whatever it was fed.
DECODED_PIX_FMTS = {"yuva444p10le": {"yuva444p10le", "yuva444p12le", "yuv444p12le", "yuv444p10le"}}
CONTAINER_NAMES = {"mp4": "mp4", "mov": "mov", "webm": "webm"}
ERROR_WEIGHT, WARNING_WEIGHT = 30, 5


@dataclass(frozen=True)
class SyncLimits:
    warn_lag_ms: float = -45.0
    warn_lead_ms: float = 15.0
    fail_lag_ms: float = -125.0
    fail_lead_ms: float = 45.0


@dataclass
class Issue:
    severity: str  # error | warning
    code: str
    message: str
    hint: str = ""


@dataclass
class Report:
    status: str
    score: int
    issues: list[Issue]
    measurements: dict = field(default_factory=dict)
    vmaf: float | None = None
    loudness_lufs: float | None = None
    av_offset_ms: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["issues"] = [asdict(i) for i in self.issues]
        return d


def load_brands(path: str | None = None) -> dict:
    """Per-owner brand rules from the YAML file named by VEXPORT_BRANDS (owner -> rules)."""
    import os

    import yaml

    path = path or os.environ.get("VEXPORT_BRANDS")
    if not path:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read brand rules: {exc}", where=str(path), code="brands_invalid") from None
    known = {"min_height", "min_width", "max_video_bitrate", "forbidden_codecs", "loudness_lufs", "containers"}
    for owner, rules in data.items():
        if not isinstance(rules, dict) or set(rules) - known:
            raise InputError(
                f"{owner}: rules must be a mapping of {', '.join(sorted(known))}",
                where=str(path),
                code="brands_invalid",
            )
    return data


def brand_issues(info: MediaInfo, rules: dict) -> list[Issue]:
    out = []
    v, a = info.video, info.audio
    if v and (lo := rules.get("min_height")) and min(v.display_width, v.display_height) < lo:
        out.append(
            Issue(
                "error",
                "brand_min_resolution",
                f"{v.display_width}x{v.display_height} is under the brand's {lo}p minimum",
                f"export at {lo}p or more",
            )
        )
    if v and (lo := rules.get("min_width")) and v.display_width < lo:
        out.append(
            Issue(
                "error",
                "brand_min_resolution",
                f"{v.display_width} px wide, under the brand's {lo}",
                f"export at least {lo} px wide",
            )
        )
    if v and (cap := rules.get("max_video_bitrate")) and (v.bit_rate or 0) > cap:
        out.append(
            Issue(
                "error",
                "brand_max_bitrate",
                f"video at {v.bit_rate / 1e6:.1f} Mb/s, over the brand's {cap / 1e6:.1f}",
                "lower the quality tier or set video_bitrate",
            )
        )
    if v and v.codec in {c.replace("h265", "hevc") for c in rules.get("forbidden_codecs", [])}:
        out.append(
            Issue(
                "error",
                "brand_forbidden_codec",
                f"{v.codec} is forbidden by the brand rules",
                "pick another video_codec",
            )
        )
    if a and a.codec in rules.get("forbidden_codecs", []):
        out.append(
            Issue(
                "error",
                "brand_forbidden_codec",
                f"{a.codec} audio is forbidden by the brand rules",
                "pick another audio_codec",
            )
        )
    if (allowed := rules.get("containers")) and not set(info.format_name.split(",")) & set(allowed):
        out.append(
            Issue(
                "error",
                "brand_container",
                f"container {info.format_name} is not one of {', '.join(allowed)}",
                "pick an allowed format",
            )
        )
    return out


def verdict(issues: list[Issue]) -> tuple[str, int]:
    errors = sum(i.severity == "error" for i in issues)
    warnings = sum(i.severity == "warning" for i in issues)
    score = max(0, 100 - ERROR_WEIGHT * errors - WARNING_WEIGHT * warnings)
    return ("fail" if errors else "warn" if warnings else "pass"), score


def check_file(
    path: Path,
    s: EncodeSettings,
    *,
    expected_duration: float | None = None,
    source_has_audio: bool = False,
    decode: bool = True,
    info: MediaInfo | None = None,
    source_av_offset_ms: float = 0.0,
    loudness_target: tuple[float, float] | None = None,
    sync: SyncLimits = SyncLimits(),
    reference: tuple[MediaInfo, Clip] | None = None,
    quality: str = "sampled",
    brand: dict | None = None,
) -> Report:
    """Every check on one file; never raises for a bad file, it reports.

    `source_av_offset_ms` is the source's own offset (audio leads positive): sync is judged on the change.
    `loudness_target` (LUFS, dBTP) is checked to +-1 LU when the composition asked for normalization."""
    issues: list[Issue] = []
    frame = 1.0 / float(Fraction(s.fps))

    def err(code, message, hint=""):
        issues.append(Issue("error", code, message, hint))

    def limit(key, code, message, hint=""):
        issues.append(Issue("warning" if key in s.uncertain else "error", code, message, hint))

    try:
        info = info or probe(path, where=str(path))
    except InputError as exc:
        err("unreadable", str(exc), "re-encode the rendition; the file cannot be opened")
        status, score = verdict(issues)
        return Report(status, score, issues)
    m: dict = {"size_bytes": info.size_bytes, "duration": info.duration, "format": info.format_name}
    if CONTAINER_NAMES[s.container] not in info.format_name.split(","):
        err(
            "container_mismatch",
            f"container is {info.format_name}, expected {s.container}",
            f"remux into {s.container}",
        )
    v = info.video
    if v is None:
        err("no_video", "the file has no video stream", "re-encode with a video stream mapped")
    else:
        m.update({"width": v.width, "height": v.height, "fps": v.fps, "pix_fmt": v.pix_fmt, "video_codec": v.codec})
        if v.codec not in CODEC_NAMES[s.video_codec]:
            err("codec_mismatch", f"video codec is {v.codec}, expected {s.video_codec}", f"re-encode with {s.encoder}")
        if (v.display_width, v.display_height) != (s.width, s.height):
            err(
                "size_mismatch",
                f"picture is {v.display_width}x{v.display_height}, expected {s.width}x{s.height}",
                f"scale to {s.width}x{s.height}",
            )
        if v.sar not in ("1", "0"):
            err("non_square_pixels", f"sample aspect ratio is {v.sar}, expected 1:1", "add setsar=1")
        if abs(float(v.rate) - float(Fraction(s.fps))) > 0.01 * float(Fraction(s.fps)):
            err(
                "fps_mismatch",
                f"frame rate is {v.fps}, expected {float(Fraction(s.fps)):.3f}",
                f"re-encode with fps={s.fps}",
            )
        if v.pix_fmt not in DECODED_PIX_FMTS.get(s.pix_fmt, {s.pix_fmt}):
            err(
                "pix_fmt_mismatch",
                f"pixel format is {v.pix_fmt}, expected {s.pix_fmt}",
                f"re-encode with pix_fmt {s.pix_fmt}",
            )
        if s.video_codec in ("h264", "h265", "vp8", "vp9", "av1") and (v.width % 2 or v.height % 2):
            err(
                "odd_dimensions",
                f"{v.width}x{v.height} has an odd side; 4:2:0 needs even sizes",
                "scale to even dimensions",
            )
    video_duration = (v.duration if v and v.duration else info.duration) if v else info.duration
    m["video_duration"] = video_duration
    if expected_duration is not None and abs(video_duration - expected_duration) > frame + 1e-3:
        err(
            "duration_mismatch",
            f"video lasts {video_duration:.3f} s, the timeline {expected_duration:.3f} s (more than one frame apart)",
            "re-render the clip; check cuts and transitions",
        )
    a = info.audio
    if s.audio_codec and source_has_audio:
        if a is None:
            err("audio_missing", "the source has audio but the rendition has none", "map the audio stream")
        elif a.codec not in AUDIO_NAMES[s.audio_codec]:
            err(
                "audio_codec_mismatch",
                f"audio codec is {a.codec}, expected {s.audio_codec}",
                f"re-encode audio with {s.audio_encoder}",
            )
    if a is not None and v is not None:
        offset = round((v.start_time - a.start_time) * 1000, 1)  # positive: audio leads
        m["av_offset_ms"] = offset
        change = offset - source_av_offset_ms
        what = f"audio {'leads' if change > 0 else 'lags'} the video by {abs(change):.0f} ms more than in the source"
        if not sync.fail_lag_ms <= change <= sync.fail_lead_ms:
            err("av_sync", what, "re-render; check audio filters that reset the start time (aresample, loudnorm)")
        elif not sync.warn_lag_ms <= change <= sync.warn_lead_ms:
            issues.append(Issue("warning", "av_sync", what, "check the sync by eye; re-render if it shows"))
        if a.duration and v.duration:
            gap = (a.start_time + a.duration) - (v.start_time + v.duration)
            m["av_tail_gap_ms"] = round(gap * 1000, 1)
            if abs(gap) > frame + 0.025:  # one frame plus one audio packet
                issues.append(
                    Issue(
                        "warning",
                        "av_tail_gap",
                        f"audio ends {gap * 1000:+.0f} ms from the video's end",
                        "pad or trim the audio to the video's length",
                    )
                )
    if s.container in ("mp4", "mov") and info.faststart is False:
        err(
            "moov_at_end",
            "the moov atom comes after the media data; browsers must download it all first",
            "remux with -movflags +faststart",
        )
    L = s.limits
    if (cap := L.get("max_file_bytes")) and info.size_bytes > cap:
        limit(
            "max_file_bytes",
            "file_too_large",
            f"file is {info.size_bytes / 1e6:.1f} MB, over the {cap / 1e6:.0f} MB cap",
            "lower the quality tier or bitrate",
        )
    if (lo := L.get("min_duration")) and info.duration < lo:
        limit(
            "min_duration",
            "too_short",
            f"{info.duration:.2f} s is shorter than the {lo} s minimum",
            "use a longer segment",
        )
    if (hi := L.get("max_duration")) and info.duration > hi:
        limit(
            "max_duration",
            "too_long",
            f"{info.duration:.2f} s is longer than the {hi} s maximum",
            "cut it shorter or split into clips",
        )
    if L.get("no_edit_list") and info.extra.get("edit_list"):
        limit(
            "no_edit_list",
            "edit_list",
            "the file carries an edit list, which this platform asks not to have",
            "remux with -use_editlist 0 -movflags +negative_cts_offsets",
        )
    if v is not None:
        w, h = v.display_width, v.display_height
        if (lo := L.get("min_aspect")) and w / h < lo - 1e-3:
            limit(
                "min_aspect",
                "aspect_out_of_range",
                f"aspect {w}:{h} is narrower than the platform's {lo:.3f}",
                "crop or pad to a supported aspect",
            )
        if (hi := L.get("max_aspect")) and w / h > hi + 1e-3:
            limit(
                "max_aspect",
                "aspect_out_of_range",
                f"aspect {w}:{h} is wider than the platform's {hi:.3f}",
                "crop or pad to a supported aspect",
            )
        if (lo := L.get("min_side")) and min(w, h) < lo:
            limit(
                "min_side",
                "too_small",
                f"{w}x{h} has a side under {lo} px",
                f"scale so both sides are at least {lo} px",
            )
        if (hi := L.get("max_side")) and max(w, h) > hi:
            limit("max_side", "too_big", f"{w}x{h} has a side over {hi} px", f"scale so no side is over {hi} px")
        if (hi := L.get("max_width")) and w > hi:
            limit("max_width", "too_wide", f"{w} px wide, over the platform's {hi}", f"scale to at most {hi} px wide")
        rate = v.bit_rate or (info.bit_rate - (a.bit_rate or 0) if info.bit_rate and a else info.bit_rate)
        if (cap := L.get("max_video_bitrate")) and rate and rate > cap:
            limit(
                "max_video_bitrate",
                "bitrate_too_high",
                f"video at {rate / 1e6:.1f} Mb/s, over the {cap / 1e6:.0f} Mb/s cap",
                "lower the quality tier or set video_bitrate",
            )
    if a is not None:
        if (allowed := L.get("audio_codecs")) and a.codec not in allowed:
            limit(
                "audio_codecs",
                "audio_codec_refused",
                f"audio codec {a.codec} is not accepted ({', '.join(allowed)})",
                f"re-encode the audio as {allowed[0]}",
            )
        if (rates := L.get("sample_rates")) and a.sample_rate not in rates:
            limit(
                "sample_rates",
                "sample_rate",
                f"audio at {a.sample_rate} Hz; the platform takes {', '.join(map(str, rates))}",
                f"resample to {rates[0]} Hz",
            )
        if (hi := L.get("max_sample_rate")) and a.sample_rate > hi:
            limit("max_sample_rate", "sample_rate", f"audio at {a.sample_rate} Hz, over {hi}", f"resample to {hi} Hz")
        if (hi := L.get("max_channels")) and a.channels > hi:
            limit("max_channels", "channels", f"{a.channels} audio channels, over {hi}", "downmix to stereo")
    if v is not None:
        if (lo := L.get("min_fps")) and v.fps < lo - 0.01:
            limit(
                "min_fps", "fps_too_low", f"{v.fps} fps is below the platform minimum {lo}", f"set fps to at least {lo}"
            )
        if (hi := L.get("max_fps")) and v.fps > hi + 0.01:
            limit(
                "max_fps", "fps_too_high", f"{v.fps} fps is above the platform maximum {hi}", f"set fps to at most {hi}"
            )
    if v is not None:
        if (
            s.video_codec == "h264"
            and s.pix_fmt == "yuv420p"
            and v.profile not in ("High", "Main", "Constrained Baseline")
        ):
            err(
                "profile",
                f"H.264 profile is {v.profile}; players expect High (8-bit 4:2:0)",
                "re-encode with -profile:v high -pix_fmt yuv420p",
            )
        if s.video_codec == "h264" and s.level and v.level and v.level > round(float(s.level) * 10):
            err(
                "level_too_high",
                f"H.264 level {v.level / 10:.1f} is above the {s.level} this size and rate need; some devices refuse it",
                f"re-encode with -level:v {s.level}",
            )
        if (
            len(frame_intervals(path)) > 1 and s.container != "webm"
        ):  # WebM timestamps are in ms: rounding jitter is normal
            err(
                "variable_frame_rate",
                "frame timestamps are not evenly spaced (variable frame rate)",
                f"re-encode with fps={s.fps}",
            )
    expected_streams = 1 + bool(s.audio_codec and (source_has_audio or s.silent_audio))
    if info.stream_count != expected_streams:
        err(
            "stream_layout",
            f"{info.stream_count} streams, expected {expected_streams} (one video{', one audio' if expected_streams == 2 else ''})",
            "map only the streams the target needs",
        )
    if decode:
        found = analyze(path, has_video=v is not None, has_audio=a is not None)
        m.update(
            {
                "decoded_frames": found.frames,
                "integrated_lufs": found.integrated_lufs,
                "lra_lu": found.lra_lu,
                "true_peak_dbtp": found.true_peak_dbtp,
                "black": found.black,
                "silence": found.silence,
            }
        )
        if v is not None:
            expected_frames = round(video_duration * float(Fraction(s.fps)))
            m["expected_frames"] = expected_frames
            if found.decode_errors:
                err(
                    "decode_error",
                    f"{len(found.decode_errors)} decode error(s), first: {found.decode_errors[0]}",
                    "re-encode; the stream is damaged",
                )
            if abs(found.frames - expected_frames) > 1:
                err(
                    "frame_count",
                    f"decoded {found.frames} frames, expected {expected_frames}",
                    "re-encode; the file is truncated or damaged",
                )
        for start, end in found.black:
            issues.append(
                Issue(
                    "warning",
                    "black_frames",
                    f"black picture from {start:.2f} s to {end:.2f} s",
                    "check the cut points and the source",
                )
            )
        if a is not None and not s.silent_audio:
            for start, end in found.silence:
                stop = "the end" if end != end else f"{end:.2f} s"  # NaN: silent to the end
                issues.append(
                    Issue(
                        "warning",
                        "silence",
                        f"silence from {start:.2f} s to {stop}",
                        "check the audio mapping and the source",
                    )
                )
        lufs, peak = found.integrated_lufs, found.true_peak_dbtp
        if peak is not None and peak > 0.0:
            err(
                "clipping",
                f"true peak {peak:+.1f} dBTP is over full scale: the audio clips",
                "normalize with a true-peak limit (audio.normalize)",
            )
        elif lufs is not None and lufs > -9.0:
            issues.append(
                Issue(
                    "warning",
                    "too_loud",
                    f"integrated loudness {lufs:.1f} LUFS is far above streaming levels (-14)",
                    "normalize (audio.normalize, target_lufs -14)",
                )
            )
        if loudness_target and lufs is not None:
            target_i, target_tp = loudness_target
            if abs(lufs - target_i) > 1.0:
                err(
                    "loudness_target",
                    f"integrated loudness {lufs:.1f} LUFS, target {target_i} +-1 LU",
                    "re-run two-pass loudnorm",
                )
            if peak is not None and peak > target_tp + 0.1:
                err(
                    "true_peak",
                    f"true peak {peak:+.1f} dBTP over the {target_tp} dBTP limit",
                    "lower the true-peak target or the gain",
                )
    for issue in brand_issues(info, brand or {}):
        issues.append(issue)
    vmaf = None
    if (
        reference is not None
        and quality != "off"
        and v is not None
        and not any(i.code in ("unreadable", "decode_error") for i in issues)
    ):
        source, clip = reference
        why_not = comparable(source, s)
        if why_not:
            m["quality_skipped"] = why_not
        else:
            q = score_quality(path, source, clip, s, full=quality == "full")
            m["per_frame_vmaf"] = q.pop("per_frame")
            m["quality"] = q
            vmaf = q["vmaf_mean"]
            floor = TIER_MIN_VMAF.get(s.quality)
            if floor and vmaf < floor and not s.video_bitrate:
                err(
                    "vmaf_below_tier",
                    f"mean VMAF {vmaf} ({q['model']}) is under the {s.quality} tier's {floor}",
                    "use a higher quality tier or a lower CRF",
                )
    status, score = verdict(issues)
    return Report(
        status, score, issues, m, vmaf=vmaf, loudness_lufs=m.get("integrated_lufs"), av_offset_ms=m.get("av_offset_ms")
    )
