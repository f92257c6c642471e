import dagster as dg

from vexport_pipeline.core.media.probe import MediaInfo, keyframe_times
from vexport_pipeline.core.media.timeline import build_timeline
from vexport_pipeline.core.spec.composition import parse_composition
from vexport_pipeline.defs.partitions import exports


@dg.asset(
    partitions_def=exports,
    group_name="export",
    description="The resolved timeline: the source ranges of each output clip, transitions and nearby keyframes.",
)
def segments(context: dg.AssetExecutionContext, source: dict) -> dg.Output[dict]:
    comp = parse_composition(source["composition"])
    info = MediaInfo.from_dict(source["info"])
    timeline = build_timeline(comp, info, keyframe_times(info.path))
    rows = "\n".join(
        f"| {c.clip_id or '-'} | {', '.join(f'{s:.3f}-{e:.3f}' for s, e in c.ranges)} | {c.crossfade} | {c.duration:.3f} | {c.cuts_on_keyframes} |"
        for c in timeline.clips
    )
    return dg.Output(
        timeline.to_dict(),
        metadata={
            "export_type": timeline.export_type,
            "clips": len(timeline.clips),
            "output_duration_s": timeline.output_duration,
            "timeline": dg.MetadataValue.md(
                "| clip | ranges (s) | crossfade | duration | on keyframes |\n|---|---|---|---|---|\n" + rows
            ),
        },
    )
