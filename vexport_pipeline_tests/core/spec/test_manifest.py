import json

import pytest

from vexport_pipeline.core.errors import InputError, ManifestError
from vexport_pipeline.core.settings import MediaPolicy
from vexport_pipeline.core.spec.loading import json_schema, parse_composition, resolve_source
from vexport_pipeline.core.timecode import parse_fps, parse_time, parse_ttl
from vexport_pipeline_tests.conftest import REPO

BASE = {"source": "a.mp4", "targets": [{"preset": "youtube_1080p"}]}


def problems(data) -> list[str]:
    with pytest.raises(ManifestError) as exc:
        parse_composition(data)
    return exc.value.problems


def test_valid_contract_example_parses():
    comp = parse_composition(
        {
            "id": "launch-teaser",
            "owner": "alice",
            "source": "media/teaser.mov",
            "export_type": "combined",
            "segments": [{"start": "00:00:05.000", "end": 12.5, "clip_id": "intro"}, {"start": 30, "end": 45}],
            "transitions": {"crossfade": 0.5},
            "audio": {"normalize": True, "target_lufs": -14, "true_peak": -1.0},
            "targets": [
                {"preset": "youtube_1080p"},
                {"preset": "tiktok"},
                {"format": "mov", "video_codec": "prores", "profile": "hq", "resolution": "4k", "fps": 25},
                {"format": "webm", "resolution": "720p", "quality": "low"},
            ],
            "delivery": {
                "destinations": ["default"],
                "link_ttl": "24h",
                "max_downloads": 10,
                "allow_ips": ["10.0.0.0/8"],
                "zip": True,
            },
            "retention": {"archive_after": "30d", "delete_after": "365d", "legal_hold": False},
        }
    )
    assert comp.segments[0].start == 5.0 and comp.segments[0].end == 12.5
    assert comp.delivery.link_ttl == 86400 and comp.retention.archive_after == 30 * 86400


def test_unknown_keys_are_refused_with_their_path_and_a_suggestion():
    msgs = problems({**BASE, "targets": [{"preset": "tiktok", "resolutoin": "720p"}], "colour": 1})
    assert "targets[0].resolutoin: unknown key (did you mean 'resolution'?)" in msgs
    assert any(m.startswith("colour: unknown key") for m in msgs)


def test_bad_resolution_names_field_and_choices():
    msgs = problems(
        {**BASE, "targets": [{"preset": "tiktok"}, {"format": "mp4"}, {"format": "mp4", "resolution": "5k"}]}
    )
    assert msgs == ["targets[2].resolution: '5k' is not one of 720p, 1080p, 1440p, 4k, 8k, WIDTHxHEIGHT or source"]


@pytest.mark.parametrize(
    "segments,needle",
    [
        ([{"start": 5, "end": 3}], "segments[0]: start 00:00:05.000 is not before end 00:00:03.000"),
        (
            [{"start": 0, "end": 5}, {"start": 4, "end": 8}],
            "segments[1]: starts at 00:00:04.000, before segments[0] ends",
        ),
        (
            [{"start": 10, "end": 12}, {"start": 1, "end": 2}],
            "segments[1]: starts at 00:00:01.000, before segments[0] ends",
        ),
        ([{"start": "1:2:3:4", "end": 5}], "segments[0].start: '1:2:3:4' is not a time"),
        ([{"start": -1, "end": 5}], "segments[0].start: -1 must be a finite time of 0 or more"),
    ],
)
def test_segment_errors(segments, needle):
    msgs = problems({**BASE, "segments": segments})
    assert any(m.startswith(needle) for m in msgs), msgs


def test_export_type_rules():
    assert any(
        "single export takes one segment" in m
        for m in problems(
            {**BASE, "export_type": "single", "segments": [{"start": 0, "end": 1}, {"start": 2, "end": 3}]}
        )
    )
    assert any(
        m.startswith("transitions.crossfade: crossfades apply to combined")
        for m in problems(
            {**BASE, "export_type": "clips", "segments": [{"start": 0, "end": 1}], "transitions": {"crossfade": 0.5}}
        )
    )
    assert any(
        "not shorter than the shortest segment" in m
        for m in problems(
            {**BASE, "segments": [{"start": 0, "end": 1}, {"start": 2, "end": 2.4}], "transitions": {"crossfade": 0.5}}
        )
    )


def test_targets_checked_against_presets_and_containers():
    msgs = problems({**BASE, "targets": [{"preset": "tiktk"}]})
    assert msgs == ["targets[0].preset: 'tiktk' is not a known preset (did you mean 'tiktok'?)"]
    msgs = problems({**BASE, "targets": [{"format": "webm", "video_codec": "h264"}]})
    assert msgs[0].startswith("targets[0].video_codec: h264 cannot go in webm")
    assert problems({**BASE, "targets": []}) == ["targets: List should have at least 1 item after validation, not 0"]


def test_unknown_destination_is_refused():
    msgs = problems({**BASE, "delivery": {"destinations": ["default", "s3-archive"]}})
    assert msgs == [
        "delivery.destinations[1]: 's3-archive' is not a configured destination"
        " (configured: default; see VEXPORT_DESTINATIONS)"
    ]


def test_time_and_rate_parsing():
    assert parse_time("01:02:03.250") == 3723.25
    assert parse_time("02:03") == 123.0
    assert parse_time(7) == 7.0
    assert parse_ttl("90m") == 5400 and parse_ttl("2d") == 172800
    assert parse_fps(29.97) == "30000/1001" and parse_fps("23.976") == "24000/1001" and parse_fps(25) == "25"
    with pytest.raises(ValueError):
        parse_fps(0)


def test_id_defaults_from_file_name_and_must_be_safe(tmp_path):
    from vexport_pipeline.core.spec.loading import load_composition

    p = tmp_path / "My Launch Teaser.yaml"
    p.write_text("source: a.mp4\ntargets: [{preset: tiktok}]\n")
    assert load_composition(p).id == "my-launch-teaser"
    assert any(m.startswith("id:") for m in problems({**BASE, "id": "../etc"}))


def test_source_policy_refuses_urls_and_escapes(tmp_path):
    inside = tmp_path / "proj"
    inside.mkdir()
    (inside / "a.mp4").write_bytes(b"x")
    (tmp_path / "secret.mp4").write_bytes(b"x")
    policy = MediaPolicy((tmp_path / "media",))
    ok = resolve_source(parse_composition(BASE), inside, policy)
    assert ok == (inside / "a.mp4").resolve()
    for src, code in [
        ("http://example.com/a.mp4", "source_not_allowed"),
        ("../secret.mp4", "source_not_allowed"),
        (str(tmp_path / "secret.mp4"), "source_not_allowed"),
        ("missing.mp4", "source_missing"),
        ("s3://bucket/key.mp4", "source_not_allowed"),  # no destination allows sources from this bucket
        ("s3://bucket/../x.mp4", "source_not_allowed"),
    ]:
        with pytest.raises(InputError) as exc:
            resolve_source(parse_composition({**BASE, "source": src}), inside, policy)
        assert exc.value.code == code and exc.value.where == "source"


def test_committed_json_schema_is_current():
    committed = json.loads((REPO / "docs" / "composition.schema.json").read_text())
    assert committed == json.loads(json.dumps(json_schema())), (
        "run `make schema` and commit docs/composition.schema.json"
    )


def test_builtin_presets_are_data_that_yaml_reads_as_meant():
    """presets.yaml: every target is a valid manifest target, numbers are numbers, flags are booleans
    (YAML 1.1 would turn an unquoted off/on/no/yes into one), uncertain names only limits that exist."""
    from vexport_pipeline.core.spec.composition import Target
    from vexport_pipeline.core.spec.presets import builtin_presets

    presets = builtin_presets()
    assert {"youtube_1080p", "tiktok", "instagram_reels", "prores_master", "web_720p"} <= set(presets)
    for name, p in presets.items():
        Target.model_validate(p["target"])
        # every target field, description and note is text (unquoted, `off` or `no` would be a boolean)
        assert all(isinstance(v, str) for v in [*p["target"].values(), p["description"], *p.get("notes", {}).values()])
        for key, value in p.get("limits", {}).items():
            if key.startswith(("max_", "min_")):
                assert isinstance(value, int | float) and not isinstance(value, bool), (name, key, value)
            if key.endswith("_aspect"):
                assert isinstance(value, float), (name, key, value)  # a ratio, as the old table had it
            elif key.startswith(("max_", "min_")) and key != "min_duration":
                assert isinstance(value, int), (name, key, value)  # sizes, rates, counts: whole numbers
            if key.startswith(("no_", "requires_")):
                assert isinstance(value, bool), (name, key, value)
        assert all(isinstance(c, str) for c in p.get("limits", {}).get("audio_codecs", [])), name
        assert all(type(r) is int for r in p.get("limits", {}).get("sample_rates", [])), name
        assert set(p.get("uncertain", [])) <= set(p.get("limits", {})), name
        assert set(p.get("notes", {})) <= set(p.get("limits", {})), name
    assert presets["youtube_1080p"]["limits"]["max_file_bytes"] == 256_000_000_000


def test_yaml_off_means_quality_off(tmp_path):
    from vexport_pipeline.core.spec.loading import load_composition

    src = tmp_path / "a.mp4"
    src.write_bytes(b"")
    for text in ("off", "false", "no", "'off'"):
        manifest = tmp_path / "c.yaml"
        manifest.write_text(f"source: a.mp4\nvalidation: {{quality: {text}}}\ntargets: [{{preset: web_720p}}]\n")
        assert load_composition(manifest).validation.quality == "off"


def test_user_presets_come_from_the_settings_or_the_given_path(tmp_path, monkeypatch):
    """`PresetBook.load()` reads the file `VEXPORT_PRESETS` names (through the settings); a path wins."""
    from vexport_pipeline.core.spec.presets import PresetBook

    named = tmp_path / "named.yaml"
    named.write_text("mine: {base: web_720p, target: {quality: high}, limits: {max_duration: 60}}\n")
    given = tmp_path / "given.yaml"
    given.write_text("theirs: {target: {format: webm}}\n")
    monkeypatch.delenv("VEXPORT_PRESETS", raising=False)
    assert "mine" not in PresetBook.load().presets
    monkeypatch.setenv("VEXPORT_PRESETS", str(named))
    mine = PresetBook.load().presets["mine"]
    assert mine["target"]["quality"] == "high" and mine["limits"]["max_duration"] == 60
    assert mine["target"]["resolution"] == PresetBook.load().presets["web_720p"]["target"]["resolution"]
    book = PresetBook.load(given)
    assert "theirs" in book.presets and "mine" not in book.presets
    given.write_text("broken: {target: {format: avi}}\n")
    with pytest.raises(InputError) as exc:
        PresetBook.load(given)
    assert exc.value.code == "presets_invalid" and "broken.target" in str(exc.value)
