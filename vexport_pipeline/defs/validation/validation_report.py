from pathlib import Path

import dagster as dg

from vexport_pipeline.core.media.probe import MediaInfo
from vexport_pipeline.core.media.timeline import Timeline
from vexport_pipeline.core.spec.composition import parse_composition
from vexport_pipeline.core.spec.presets import EncodeSettings
from vexport_pipeline.core.validation import visuals as findings
from vexport_pipeline.core.validation.checks import check_file, load_brands
from vexport_pipeline.defs.partitions import exports

CHECK = "renditions_pass_validation"


def _images(context, renditions: list, reports: list, export_id: str, source: dict) -> dict:
    """Contact sheet and VMAF/bitrate plot per rendition, kept in the work area beside the renditions."""
    folder = Path(source["work_source"]).parent / "report"
    folder.mkdir(parents=True, exist_ok=True)
    images = {}
    for r, x in zip(renditions, reports):
        name = f"{r['clip_id'] + '/' if r['clip_id'] else ''}{r['target']}"
        stem = name.replace("/", "__")
        try:
            sheet = findings.contact_sheet(Path(r["path"]), folder / f"{stem}.sheet.png", r["duration"])
            chart = findings.plot(
                Path(r["path"]), folder / f"{stem}.plot.png", x["measurements"].get("per_frame_vmaf"), name
            )
            images[name] = (sheet, chart)
        except Exception as exc:  # a file too broken to draw is already failed by the checks
            context.log.warning(f"no pictures for {name}: {exc}")
    return images


def _table(df) -> str:
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns)
    return head + "\n" + "\n".join("| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False))


def _playback(context, renditions: list, reports: list) -> None:
    """The optional real-client step: each web rendition played in headless Chromium."""
    from vexport_pipeline.core.validation.checks import Issue, verdict
    from vexport_pipeline.core.validation.playback import WEB_CODECS, play, playback_issues

    web = [(r, x) for r, x in zip(renditions, reports) if (r["container"], r["video_codec"]) in WEB_CODECS]
    for (r, x), seen in zip(web, play([Path(r["path"]) for r, _ in web])):
        found = playback_issues(seen, r["width"], r["height"], r["duration"], 1 / r["fps"])
        x["issues"] += [
            vars(Issue("error", code, msg, "re-encode with the target's web-safe defaults")) for code, msg in found
        ]
        x["status"], x["score"] = verdict([Issue(**i) for i in x["issues"]])
        x["measurements"]["playback"] = seen
        context.log.info(f"playback {r['target']}: {'ok' if not found else found}")


@dg.asset(
    partitions_def=exports,
    group_name="export",
    check_specs=[
        dg.AssetCheckSpec(
            CHECK,
            asset="validation_report",
            blocking=True,
            description="Every rendition passes validation; a failure blocks delivery.",
        )
    ],
    description="Technical checks of every rendition against its target; failures block delivery.",
)
def validation_report(context: dg.AssetExecutionContext, source: dict, segments: dict, renditions: list):
    comp = parse_composition(source["composition"])
    v, a = source["info"]["video"], source["info"]["audio"]
    source_offset = (v["start_time"] - a["start_time"]) * 1000 if a else 0.0
    loudness = (comp.audio.target_lufs, comp.audio.true_peak) if comp.audio and comp.audio.normalize else None
    info = MediaInfo.from_dict(source["info"])
    clips = {c.clip_id: c for c in Timeline.from_dict(segments).clips}
    brand = load_brands().get(comp.owner, {}) if comp.owner else {}
    if brand.get("loudness_lufs") is not None:  # the brand requires a loudness target: check it even if not normalized
        loudness = (float(brand["loudness_lufs"]), loudness[1] if loudness else -1.0)
    reports = []
    for r in renditions:
        report = check_file(
            Path(r["path"]),
            EncodeSettings.from_dict(r["settings"]),
            expected_duration=r["expected_duration"],
            source_has_audio=r["source_has_audio"],
            source_av_offset_ms=source_offset,
            loudness_target=loudness,
            reference=(info, clips[r["clip_id"]]),
            quality=comp.validation.quality,
            brand=brand,
        )
        reports.append({"target": r["target"], "clip_id": r["clip_id"], **report.to_dict()})
    if comp.validation.playback:
        _playback(context, renditions, reports)
    images = _images(context, renditions, reports, comp.id, source)
    checks = findings.checks_frame(reports)
    failed = [f"{x['clip_id'] + '/' if x['clip_id'] else ''}{x['target']}" for x in reports if x["status"] == "fail"]
    status = "fail" if failed else ("warn" if any(x["status"] == "warn" for x in reports) else "pass")
    rows = "\n".join(
        f"| {x['clip_id'] or '-'} | {x['target']} | {x['status']} | {x['score']} | "
        f"{'; '.join(i['code'] + ': ' + i['message'] for i in x['issues']) or '-'} |"
        for x in reports
    )
    yield dg.Output(
        {"status": status, "renditions": reports, "checks": checks.to_dict("records")},
        metadata={
            "status": status,
            "failed": ", ".join(failed) or "none",
            "min_score": min((x["score"] for x in reports), default=100),
            "summary": dg.MetadataValue.md(
                "| clip | target | status | score | issues |\n|---|---|---|---|---|\n" + rows
            ),
            "report": dg.MetadataValue.md(findings.markdown(reports, images)),
            "checks": dg.MetadataValue.md(_table(checks)),
        },
    )
    yield dg.AssetCheckResult(
        check_name=CHECK,
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=("failed: " + ", ".join(failed)) if failed else "all renditions pass",
        metadata={"failed": len(failed), "checked": len(reports)},
    )
