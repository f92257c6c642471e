"""Hardware encoders are found by trying them; where none works (this CI machine, or an H100), the CPU encodes."""

from dataclasses import replace

from vexport_pipeline.core.media.hardware import detect, try_encoder
from vexport_pipeline.core.media.probe import probe
from vexport_pipeline.core.media.render import render_clip
from vexport_pipeline.core.media.timeline import Clip
from vexport_pipeline.core.spec.composition import Target
from vexport_pipeline.core.spec.presets import PresetBook
from vexport_pipeline.defs.resources import EncoderResource


def test_detection_tries_each_encoder_and_says_why_it_failed(media):
    assert try_encoder("libx264").works  # the trial itself works: a CPU encoder passes it
    found, trials = detect(("h264",))
    assert [t.encoder for t in trials][:1] == ["h264_nvenc"]
    for t in trials:
        assert t.works or t.reason  # every failure carries FFmpeg's reason
    if not found["h264"]:  # no GPU with NVENC/QSV here: the resource keeps the CPU encoder
        s = PresetBook.load().resolve(Target(preset="web_720p"), probe(media["av"]))
        chosen, report = EncoderResource(hardware="auto").choose([s])
        assert chosen[0].encoder == "libx264" and "h264_nvenc" in report


def test_a_failing_hardware_encode_falls_back_to_the_cpu(media, tmp_path):
    info = probe(media["av"])
    s = PresetBook.load().resolve(Target(preset="web_720p", quality="draft"), info)
    found, _ = detect(("h264",))
    broken = replace(s, encoder="h264_nvenc" if not found["h264"] else "h264_qsv_missing")
    out = tmp_path / "fb.mp4"
    done = render_clip(info, Clip(None, [(0.0, 1.0)]), [broken], [out])
    assert done.fell_back and done.encoders == ["libx264"]
    got = probe(out)
    assert got.video.codec == "h264" and (got.video.width, got.video.height) == (1280, 720)


def test_trials_are_kept_per_host_and_made_again_when_the_host_changes(tmp_path):
    import json

    cache = tmp_path / "hardware.json"
    found, trials = detect(("h264",), cache=cache)
    kept = json.loads(cache.read_text())
    assert set(kept["trials"]) == {t.encoder for t in trials} and kept["host"].count("|") == 4
    # the next export reads the answer instead of trying again (shown by a planted answer being believed)
    kept["trials"]["h264_nvenc"] = {"encoder": "h264_nvenc", "works": True, "reason": "ok"}
    cache.write_text(json.dumps(kept))
    assert detect(("h264",), cache=cache)[0]["h264"] == "h264_nvenc"
    # another boot, another FFmpeg or a day later: tried again
    for stale in ({**kept, "host": "elsewhere|0|ffmpeg|1|1"}, {**kept, "made": kept["made"] - 2 * 86400}):
        cache.write_text(json.dumps(stale))
        assert detect(("h264",), cache=cache) == (found, trials)
    cache.write_text("{not json")
    assert detect(("h264",), cache=cache) == (found, trials)


def test_a_cluster_declares_its_gpu_workers_encoders_instead_of_trying_them_here(media, monkeypatch):
    """On Kubernetes or Celery the planning step runs on a CPU worker: VEXPORT_HARDWARE names what the GPU workers
    have, so their jobs go to the `gpu` queue (and still fall back to the CPU there if the encoder fails)."""
    import pytest

    from vexport_pipeline.core.errors import ConfigError
    from vexport_pipeline.core.settings import current
    from vexport_pipeline.core.spec.loading import parse_composition
    from vexport_pipeline.defs.jobs import export_kind

    info = probe(media["av"])
    book = PresetBook.load()
    h264, vp9 = book.resolve(Target(preset="web_720p"), info), book.resolve(Target(format="webm"), info)
    chosen, report = EncoderResource(hardware="hevc_nvenc,h264_nvenc").choose([h264, vp9])
    assert [s.encoder for s in chosen] == ["h264_nvenc", vp9.encoder] and "declared" in report
    monkeypatch.setenv("VEXPORT_HARDWARE", "h264_nvenc")
    comp = parse_composition({"id": "k", "source": "x.mp4", "targets": [{"preset": "web_720p"}]})
    assert export_kind(comp) == "gpu"
    monkeypatch.setenv("VEXPORT_HARDWARE", "nvenc_h264")
    with pytest.raises(ConfigError, match="VEXPORT_HARDWARE"):
        current()
