import dagster as dg

from vexport_pipeline.core.media.probe import keyframe_times
from vexport_pipeline.core.media.timeline import Timeline, build_timeline
from vexport_pipeline.core.records import ExportSource
from vexport_pipeline.core.tables import md_table
from vexport_pipeline.defs.failures import reported
from vexport_pipeline.defs.partitions import exports


@dg.asset(
    partitions_def=exports,
    group_name="export",
    description="The resolved timeline: the source ranges of each output clip, transitions and nearby keyframes.",
)
def segments(context: dg.AssetExecutionContext, source: ExportSource) -> dg.Output[Timeline]:
    with reported():
        keyframes = keyframe_times(source.info.path)
        timeline = build_timeline(source.composition, source.info, keyframes, offset=source.offset)
    rows = [
        (
            c.clip_id,
            ", ".join(f"{s:.3f}-{e:.3f}" for s, e in c.ranges),
            c.crossfade,
            f"{c.duration:.3f}",
            c.cuts_on_keyframes,
        )
        for c in timeline.clips
    ]
    return dg.Output(
        timeline,
        metadata={
            "export_type": timeline.export_type,
            "clips": len(timeline.clips),
            "output_duration_s": timeline.output_duration,
            "timeline": dg.MetadataValue.md(
                md_table(["clip", "ranges (s)", "crossfade", "duration", "on keyframes"], rows)
            ),
        },
    )
