from pathlib import Path

import dagster as dg

from vexport_pipeline.core.media.timeline import Timeline
from vexport_pipeline.core.records import Checked, ExportSource, Rendition, ValidationOutcome
from vexport_pipeline.core.tables import md_table
from vexport_pipeline.core.validation import visuals
from vexport_pipeline.core.validation.export import validate_export, with_playback
from vexport_pipeline.core.validation.vmaf import Scores
from vexport_pipeline.defs import progress
from vexport_pipeline.defs.failures import reported
from vexport_pipeline.defs.partitions import exports
from vexport_pipeline.defs.resources import HomeResource

CHECK = "renditions_pass_validation"


def _images(context, renditions: list[Rendition], checked: list[Checked], folder: Path) -> dict:
    """Contact sheet and VMAF/bitrate plot per rendition, kept in the work area beside the renditions."""
    folder.mkdir(parents=True, exist_ok=True)
    images = {}
    for r, c in zip(renditions, checked):
        stem = r.label.replace("/", "__")
        try:
            sheet = visuals.contact_sheet(r.path, folder / f"{stem}.sheet.png", r.duration)
            vmaf = c.report.measurements.get("per_frame_vmaf")
            images[r.label] = (sheet, visuals.plot(r.path, folder / f"{stem}.plot.png", vmaf, r.label))
        except Exception as exc:  # a file too broken to draw is already failed by the checks
            context.log.warning(f"no pictures for {r.label}: {exc}")
    return images


def _metadata(context, outcome: ValidationOutcome, renditions: list[Rendition], folder: Path) -> dict:
    reports = [c.to_dict() for c in outcome.renditions]
    checks = visuals.checks_frame(reports)
    rows = [
        (c.clip_id, c.target, c.status, c.report.score, "; ".join(f"{i.code}: {i.message}" for i in c.report.issues))
        for c in outcome.renditions
    ]
    images = _images(context, renditions, list(outcome.renditions), folder)
    return {
        "status": outcome.status,
        "failed": ", ".join(outcome.failed) or "none",
        "min_score": min((c.report.score for c in outcome.renditions), default=100),
        "summary": dg.MetadataValue.md(md_table(["clip", "target", "status", "score", "issues"], rows)),
        "report": dg.MetadataValue.md(visuals.markdown(reports, images)),
        "checks": dg.MetadataValue.md(md_table(list(checks.columns), checks.itertuples(index=False))),
    }


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
def validation_report(
    context: dg.AssetExecutionContext,
    home: HomeResource,
    source: ExportSource,
    segments: Timeline,
    renditions: list[Rendition],
):
    progress.publish(context, "validating", "validation_report")
    with reported():
        kept = Scores(home.rendition_cache(), source.sha256)  # what the target-quality search measured
        checked = validate_export(source, segments, renditions, kept)
        if source.composition.validation.playback:
            checked, lines = with_playback(renditions, checked)
            for line in lines:
                context.log.info(line)
    outcome = ValidationOutcome.of(checked)
    metadata = _metadata(context, outcome, outcome.files(renditions), source.work_source.parent / "report")
    yield dg.Output(outcome, metadata=metadata)
    failed = outcome.failed
    yield dg.AssetCheckResult(
        check_name=CHECK,
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=("failed: " + ", ".join(failed)) if failed else "all renditions pass",
        metadata={"failed": len(failed), "checked": len(outcome.renditions)},
    )
