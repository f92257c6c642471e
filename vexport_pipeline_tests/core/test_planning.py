"""Refuse before working: what the composition and the probe already show cannot end well is refused
with the target, the limit and the value named, before any encode."""

import json
from dataclasses import replace

import pytest

from vexport_pipeline.core.errors import InputError
from vexport_pipeline.core.media.probe import AudioInfo, MediaInfo, VideoInfo
from vexport_pipeline.core.planning import plan_export, source_notes
from vexport_pipeline.core.spec.loading import parse_composition
from vexport_pipeline_tests.conftest import vexport, write_manifest

VIDEO = VideoInfo("h264", "High", "yuv420p", 1920, 1080, 1920, 1080, 0, "1", 30.0, "30", 0, 600.0, 0.0, None)
SOURCE = MediaInfo(
    "/m.mp4", "mov,mp4", 600.0, 1, None, 0.0, VIDEO, AudioInfo("aac", 48000, 2, "stereo", 600, 0, None), stream_count=2
)


def refusal(targets, segments=None, export_type="combined", info=SOURCE) -> str:
    comp = parse_composition(
        {
            "id": "p",
            "source": "m.mp4",
            "export_type": export_type,
            "targets": targets,
            **({"segments": segments} if segments else {}),
        }
    )
    with pytest.raises(InputError) as caught:
        plan_export(comp, info)
    assert caught.value.code == "plan_refused" and caught.value.exit_code == 2
    return str(caught.value)


def test_durations_outside_a_platforms_firm_range_are_refused_per_clip():
    text = refusal([{"preset": "instagram_feed_square"}], [{"start": 0, "end": 2}])
    assert "targets[0]" in text and "2.00 s" in text and "3 s minimum (min_duration)" in text
    text = refusal(
        [{"preset": "x"}], [{"start": 0, "end": 2, "clip_id": "a"}, {"start": 10, "end": 200}], export_type="clips"
    )
    assert "clip clip02 lasts 190.00 s" in text and "140 s maximum (max_duration)" in text and "clip a" not in text


def test_a_frame_rate_above_the_platform_maximum_and_an_unreachable_aspect_are_refused():
    text = refusal([{"preset": "instagram_reels", "fps": 120}], [{"start": 0, "end": 10}])
    assert "120 fps is above instagram_reels's 60 fps maximum (max_fps)" in text
    text = refusal([{"preset": "youtube_shorts", "resolution": "1920x1080"}], [{"start": 0, "end": 10}])
    assert "wider than youtube_shorts's 1.000 (max_aspect)" in text


def test_a_size_cap_no_bitrate_can_meet_is_refused_and_uncertain_limits_are_left_to_validation(tmp_path, monkeypatch):
    presets = tmp_path / "presets.yaml"
    presets.write_text("mailable:\n  base: web_720p\n  limits: {max_file_bytes: 2000000}\n")
    monkeypatch.setenv("VEXPORT_PRESETS", str(presets))
    text = refusal([{"preset": "web_720p"}, {"preset": "mailable"}], [{"start": 0, "end": 300}])
    assert "targets[1]" in text and "targets[0]" not in text
    assert "300.0 s cannot fit under the 2.0 MB cap of mailable (max_file_bytes)" in text
    comp = parse_composition(
        {"id": "p", "source": "m.mp4", "targets": [{"preset": "tiktok"}], "segments": [{"start": 0, "end": 2}]}
    )
    plan = plan_export(comp, SOURCE)  # TikTok's 3 s minimum is uncertain: validation warns, nothing is refused
    assert plan.labels == ("tiktok",)


def test_upscaling_and_raised_rates_are_allowed_and_noted():
    small = replace(SOURCE, video=replace(VIDEO, display_width=640, display_height=360, fps=25.0))
    comp = parse_composition({"id": "p", "source": "m.mp4", "targets": [{"preset": "youtube_1080p", "fps": 50}]})
    [s] = plan_export(comp, small).targets
    notes = source_notes(s, small)
    assert any("upscaled 3.00x" in n for n in notes) and any("raised from the source's 25" in n for n in notes)


def test_export_refuses_a_clip_too_short_for_the_platform_at_once_and_writes_nothing(home, media, tmp_path):
    manifest = write_manifest(
        tmp_path / "p",
        {
            "id": "short-square",
            "source": str(media["av"]),
            "segments": [{"start": 0, "end": 2}],
            "targets": [{"preset": "instagram_feed_square"}],
        },
    )
    out = tmp_path / "out.json"
    proc = vexport("export", manifest, "--json", out)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["status"] == "refused" and "min_duration" in data["errors"][0]["message"]
    # refused before the run: no partition work folder (an encode would have made one), nothing stored
    assert not (home.work / "short-square").exists() and not (home.store / "short-square").exists()
    assert "renditions" not in proc.stdout  # Dagster never reached the encode step
    refused = vexport("submit", manifest)
    assert refused.returncode == 2 and "min_duration" in refused.stderr
    assert not list(home.inbox.glob("*.json"))
