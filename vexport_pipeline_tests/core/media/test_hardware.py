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
