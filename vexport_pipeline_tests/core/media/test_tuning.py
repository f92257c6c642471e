"""The target-quality search: its model on synthetic content (pure logic), and on a real clip that the probe
the search settles on is the rendition (no second encode)."""

import math
from dataclasses import replace
from pathlib import Path

import pytest

from vexport_pipeline.core.artifacts import FolderStore
from vexport_pipeline.core.files import sha256_file
from vexport_pipeline.core.media import tuning
from vexport_pipeline.core.media.cache import RenditionCache
from vexport_pipeline.core.media.probe import probe
from vexport_pipeline.core.media.render import render_clip
from vexport_pipeline.core.media.timeline import Clip, Timeline
from vexport_pipeline.core.media.tuning import Trial, band, first_crf, start_crf, tune, tune_all
from vexport_pipeline.core.samples import make_sample
from vexport_pipeline.core.spec.composition import Target
from vexport_pipeline.core.spec.presets import PresetBook
from vexport_pipeline.core.validation.vmaf import Scores, score, stride


def _settings(info, codec: str, fmt: str, tier: str, resolution: str = "720p"):
    return PresetBook.load().resolve(Target(format=fmt, video_codec=codec, resolution=resolution, quality=tier), info)


class Content:
    """Synthetic content: ln(100 - VMAF) linear in the CRF, `harder` above typical on that scale (for x264; each
    codec finds it `GAIN` times as hard), with its own slope factor. Counts the probes the search asks for."""

    def __init__(self, harder: float, steeper: float = 1.0):
        self.harder, self.steeper, self.probes = harder, steeper, []

    def vmaf(self, s, crf: int) -> float:
        k = tuning.LOG_SLOPE[s.video_codec] * self.steeper
        d = tuning.deficit(s.vmaf_target) + self.harder * tuning.GAIN[s.video_codec] + k * (crf - start_crf(s))
        return round(100 - math.exp(d), 2)

    def probe(self, source, sample, s, crf, work, keep):
        self.probes.append((s.video_codec, crf))
        return Trial(crf, self.vmaf(s, crf), 1000.0)


@pytest.fixture
def info(media):
    return probe(media["av"])


@pytest.mark.parametrize(("codec", "fmt"), [("h264", "mp4"), ("h265", "mp4"), ("vp9", "webm"), ("av1", "mp4")])
@pytest.mark.parametrize("harder", [-0.6, 0.0, 0.5])
def test_the_search_lands_between_the_target_and_its_allowance_on_content_of_any_difficulty(
    info, monkeypatch, codec, fmt, harder
):
    content = Content(harder, steeper=1.3)
    monkeypatch.setattr(tuning, "_probe", content.probe)
    timeline = Timeline("single", [Clip(None, [(0.0, info.duration)])], {})
    for tier in ("low", "medium", "high"):
        s = _settings(info, codec, fmt, tier)
        found = tune(info, timeline, s)
        assert 1 <= len(found.trials) <= tuning.PROBES + 1
        got, at_bound = content.vmaf(s, found.settings.crf), found.settings.crf == tuning.CRF_RANGE[codec][1]
        # a sample (no cache given): in the sample's band, under the target (the whole file scores more than it)
        assert s.vmaf_target - tuning.SAMPLE_BELOW <= got, (tier, found.trials)
        assert got <= s.vmaf_target + tuning.SAMPLE_ABOVE or at_bound, (tier, found.trials)  # easy content, top CRF


def test_a_ladder_search_starts_each_later_target_where_the_earlier_ones_measured_the_content(info, monkeypatch):
    """Hard content (far from typical): the first search needs several probes, the later ones start from what
    it measured and take one each, each codec at its own gain (AV1 finds the content 2.5 times as hard as x264:
    started at x264's offset as it is, its search would take three probes)."""
    content = Content(harder=0.8)
    monkeypatch.setattr(tuning, "_probe", content.probe)
    codecs = [("h264", "mp4"), ("h265", "mp4"), ("vp9", "webm"), ("av1", "mp4")]
    ladder = [_settings(info, c, f, "medium") for c, f in codecs]
    ladder.append(_settings(info, "h264", "mp4", "medium", resolution="640x360"))
    found = tune_all(info, Timeline("single", [Clip(None, [(0.0, info.duration)])], {}), ladder)
    assert [len(t.trials) for t in found][4] >= 2  # the smallest picture is searched first, from nothing
    assert [len(t.trials) for t in found][:4] == [1, 1, 1, 1]
    assert all(content.vmaf(s, t.settings.crf) in band(s) for s, t in zip(ladder, found))
    assert first_crf(ladder[0], 0.8) < first_crf(ladder[0]) < first_crf(ladder[0], -0.8)  # harder: lower CRF


def test_a_later_search_takes_the_offset_and_slope_its_own_codec_measured(info, monkeypatch):
    """Content much harder for VP9 than for x264 (dark scenes), and steeper than typical: the second VP9 search
    starts from what the first VP9 search measured, not from x264's figure, and lands on its first probe."""

    class PerCodec(Content):
        def vmaf(self, s, crf):
            k = tuning.LOG_SLOPE[s.video_codec] * self.steeper
            hard = {"h264": 0.1, "vp9": 0.9}[s.video_codec]
            return round(100 - math.exp(tuning.deficit(s.vmaf_target) + hard + k * (crf - start_crf(s))), 2)

    content = PerCodec(0.0, steeper=1.6)
    monkeypatch.setattr(tuning, "_probe", content.probe)
    ladder = [_settings(info, "h264", "mp4", t) for t in ("low", "medium")]
    ladder += [_settings(info, "vp9", "webm", t) for t in ("low", "high")]
    found = tune_all(info, Timeline("single", [Clip(None, [(0.0, info.duration)])], {}), ladder)
    assert len(found[2].trials) >= 2 and len(found[3].trials) == 1, [t.trials for t in found]
    assert all(content.vmaf(s, t.settings.crf) in band(s) for s, t in zip(ladder, found))
    slope = tuning.measured_slope(ladder[2], found[2].trials)
    assert slope == pytest.approx(tuning.LOG_SLOPE["vp9"] * 1.6, rel=0.15)  # the content's own, measured
    assert tuning._prior(ladder[3], list(zip(ladder[:3], found[:3])))[1] == slope


def test_a_search_whose_last_two_probes_straddle_the_band_takes_one_more_then_keeps_the_best_measured(
    info, monkeypatch
):
    """Content whose quality falls off a cliff (VMAF 97 up to CRF 30, 90 above): no CRF lands in the band. The
    last two probes straddle it, so a fourth is taken between them; then the highest CRF measured over the band
    is kept (a measured promise), never an unmeasured one in between."""
    probes = []

    def cliff(source, sample, s, crf, work, keep):
        probes.append(crf)
        return Trial(crf, 97.0 if crf <= 30 else 90.0, 1.0)

    monkeypatch.setattr(tuning, "_probe", cliff)
    s = _settings(info, "av1", "mp4", "high")
    found = tune(info, Timeline("single", [Clip(None, [(0.0, info.duration)])], {}), s)
    assert len(probes) == tuning.PROBES + 1, probes
    assert tuning._bracket([Trial(c, 97.0 if c <= 30 else 90.0, 1.0) for c in probes[:-1]], band(s))
    assert found.settings.crf == max(c for c in probes if c <= 30)
    assert not tuning._bracket([Trial(20, 90.0, 1.0), Trial(15, 93.0, 1.0)], band(s))  # both under the band
    assert not tuning._bracket([Trial(20, 97.0, 1.0), Trial(21, 90.0, 1.0)], band(s))  # nothing between them


def test_a_search_interpolates_between_the_tightest_pair_that_straddles_the_band(info, monkeypatch):
    """A first probe over the band, a second far under it, a third still under: the fourth is interpolated
    between the first and the third (the tightest pair around the band), not given up because the last two probes
    both lie under it (a dark scene, AV1 at the high tier: CRF 4 scored 96.3, 25 scored 88.1, 12 scored 92.3)."""
    curve = {4: 96.3, 25: 88.1, 12: 92.3}
    probes = []

    def dark(source, sample, s, crf, work, keep):
        probes.append(crf)
        return Trial(crf, curve.get(crf, 96.3 - (crf - 4) * 0.5), 1.0)

    real_next = tuning._next_crf
    asked = []

    def scripted(s, trials, goal, prior=None):  # the second and third probes as measured; then the real rule
        asked.append([t.crf for t in trials])
        return {1: 25, 2: 12}.get(len(probes)) or real_next(s, trials, goal, prior)

    monkeypatch.setattr(tuning, "_probe", dark)
    monkeypatch.setattr(tuning, "_next_crf", scripted)
    s = _settings(info, "av1", "mp4", "high")
    found = tune(info, Timeline("single", [Clip(None, [(0.0, info.duration)])], {}), s, harder=3.0)
    assert probes[1:3] == [25, 12] and len(probes) == 4 and 4 < probes[3] < 12, probes
    assert asked[-1] == [4, 12]  # interpolated from the pair around the band, not from the last two probes
    assert found.trials[-1].vmaf in band(s) and found.settings.crf == probes[3], found.trials


def test_a_later_search_takes_the_step_another_codec_measured_between_two_tiers(info, monkeypatch):
    """Content that the high tier makes harder than typical by the same amount for every codec, and that is harder
    for VP9 than for x264: VP9's high-tier search starts from VP9's low-tier offset moved by the step x264 measured
    from low to high, and lands on its first probe (from VP9's offset alone it would start 0.8 too easy)."""

    class Grid(Content):
        def vmaf(self, s, crf):
            hard = {"h264": 0.0, "vp9": 0.6}[s.video_codec] + {"low": -0.3, "high": 0.5}[s.quality]
            d = tuning.deficit(s.vmaf_target) + hard + tuning.LOG_SLOPE[s.video_codec] * (crf - start_crf(s))
            return round(100 - math.exp(d), 2)

    content = Grid(0.0)
    monkeypatch.setattr(tuning, "_probe", content.probe)
    ladder = [_settings(info, c, f, t) for c, f in [("h264", "mp4"), ("vp9", "webm")] for t in ("low", "high")]
    found = tune_all(info, Timeline("single", [Clip(None, [(0.0, info.duration)])], {}), ladder)
    harder, _ = tuning._prior(ladder[3], list(zip(ladder[:3], found[:3])))
    assert harder == pytest.approx(0.6 + 0.5, abs=0.03)
    assert len(found[3].trials) == 1, found[3].trials
    assert all(content.vmaf(s, t.settings.crf) in band(s) for s, t in zip(ladder, found))


def test_a_bigger_picture_starts_at_a_higher_crf(info, monkeypatch):
    """Content that is typical at 720p and, as B5L's clips measured, 0.2 easier per doubling of the pixels: the
    1080p search, started from the 720p one, takes one probe (started at the 720p offset as it is, 1.3 VMAF over
    the top of its band: two)."""

    class Sized(Content):
        def vmaf(self, s, crf):
            at_720p = replace(s, width=1280, height=720)
            easier = 0.2 * math.log2(s.width * s.height / (1280 * 720))
            d = tuning.deficit(s.vmaf_target) - easier + tuning.LOG_SLOPE["h264"] * (crf - start_crf(at_720p))
            return round(100 - math.exp(d), 2)

    content = Sized(0.0)
    monkeypatch.setattr(tuning, "_probe", content.probe)
    ladder = [_settings(info, "h264", "mp4", "high", resolution=r) for r in ("1920x1080", "1280x720")]
    found = tune_all(info, Timeline("single", [Clip(None, [(0.0, info.duration)])], {}), ladder)
    assert [len(t.trials) for t in found] == [1, 1], [t.trials for t in found]
    assert start_crf(ladder[0]) - start_crf(ladder[1]) == pytest.approx(0.2 * math.log2(2.25) / 0.13, abs=0.01)
    assert all(content.vmaf(s, t.settings.crf) in band(s) for s, t in zip(ladder, found))


@pytest.mark.parametrize(("codec", "fmt"), [("vp9", "webm"), ("av1", "mp4")])
def test_a_dark_scene_may_take_vp9_and_av1_far_under_their_usual_crf(info, monkeypatch, codec, fmt):
    """A dark scene needs VP9 and AV1 far lower than typical content (the corpus's dark clip at the master tier:
    VP9 scored 93.4 for 96 at CRF 15, where the search used to stop): the search goes on down into the band."""
    content = Content(harder=2.0 / tuning.GAIN[codec])  # 2.0 on the codec's own scale
    monkeypatch.setattr(tuning, "_probe", content.probe)
    s = _settings(info, codec, fmt, "high")
    found = tune(info, Timeline("single", [Clip(None, [(0.0, info.duration)])], {}), s)
    assert found.settings.crf < 15 and content.vmaf(s, found.settings.crf) in band(s), found.trials


def test_one_extrapolated_jump_is_bounded_where_scores_saturate(info):
    s = _settings(info, "vp9", "webm", "high")
    nxt = tuning._next_crf(s, [Trial(30, 99.4, 1000.0)], band(s))  # near 100 the deficit scale stretches
    assert 30 < nxt <= 30 + math.ceil(tuning.MAX_JUMP / tuning.LOG_SLOPE["vp9"])
    far = tuning._next_crf(s, [Trial(40, 88.0, 1000.0)], band(s))  # far under the target, unsaturated: the model
    assert far == round(tuning.crf_towards("vp9", 40, 88.0, band(s).aim)) < 40 - tuning.MAX_JUMP / 0.064


@pytest.mark.slow
def test_the_probe_the_search_settles_on_is_the_rendition(tmp_path):
    """A short single clip is its own sample: the probe is encoded as the rendition would be and cached, so the
    encode that follows the search is a cache hit, and the file scores what the search measured."""
    src = make_sample("photo", tmp_path / "photo.mp4", size=(1280, 720), seconds=1.0, audio=True)
    info = probe(src)
    clip = Clip(None, [(0.0, info.duration)])
    s = _settings(info, "h264", "mp4", "low", resolution="640x360")
    shared = FolderStore(tmp_path / "artifacts")  # as on a cluster: every worker's cache shares this store
    cache, sha = RenditionCache(tmp_path / "cache", shared), sha256_file(src)
    found = tune(info, Timeline("single", [clip], {}), s, cache=cache, source_sha256=sha)
    out = tmp_path / "out.mp4"
    done = render_clip(info, clip, [found.settings], [out], cache=cache, source_sha256=sha)
    probed = {t.crf: t for t in found.trials}
    if found.settings.crf in probed:
        assert done.cached == [True]
        every = stride(clip, found.settings)  # the frames validation scores: every one of this short clip's
        assert every == 1
        measured = score(out, info, clip, found.settings)["vmaf_mean"]
        assert measured == pytest.approx(probed[found.settings.crf].vmaf, abs=0.01)
        # validation takes the search's score of this very file instead of measuring it again
        kept = Scores(cache, sha).recall(sha256_file(out), clip, done.settings[0], every)
        assert kept and kept["vmaf_mean"] == probed[found.settings.crf].vmaf
        assert kept["subsample"] == every and kept["vmaf_source_size"] and kept["psnr_mean"]
        assert Scores(cache, sha).recall(sha256_file(src), clip, done.settings[0], every) is None
    else:
        assert done.cached == [False]
    got = probe(out)
    assert (got.video.width, got.video.height) == (640, 360) and got.has_audio
    assert abs(got.duration - info.duration) < 0.1
    # the same search again is remembered, on this worker and on another one: no probe encodes at all
    other = RenditionCache(tmp_path / "other-worker-cache", shared)
    for where in (cache, other):
        again = tune(info, Timeline("single", [clip], {}), replace(s), cache=where, source_sha256=sha)
        assert again.cached and again.settings.crf == found.settings.crf
    if found.settings.crf in probed:  # and the other worker's validation finds the kept score
        assert Scores(other, sha).recall(sha256_file(out), clip, done.settings[0], 1)["vmaf_mean"] == (
            probed[found.settings.crf].vmaf
        )
    assert Path(out).stat().st_size > 0


def test_a_target_the_source_is_copied_into_is_not_searched(tmp_path, monkeypatch):
    """A stream copy is the same file at any CRF: the search encoded and scored the same copy three times."""
    src = make_sample("photo", tmp_path / "photo.mp4", size=(1280, 720), seconds=1.0, audio=False)
    info = probe(src)
    clip = Clip(None, [(0.0, info.duration)], cuts_on_keyframes=True)
    s = _settings(info, "h264", "mp4", "low", resolution="1280x720")

    def no_probe(*args):
        raise AssertionError("probed a stream copy")

    monkeypatch.setattr(tuning, "_probe", no_probe)
    found = tune(info, Timeline("single", [clip], {}), s)
    assert found.trials == () and found.settings == s
    done = render_clip(info, clip, [found.settings], [tmp_path / "out.mp4"])
    assert done.copied == [True]


def test_a_ladder_with_targets_that_are_not_searched_searches_the_others(info, monkeypatch):
    """ProRes (its profile is the quality) beside searched targets: it keeps its settings, the others are searched
    as usual, whatever the order (a ProRes target after a search used to fail the plan: no gain for 'prores')."""
    content = Content(harder=0.3)
    monkeypatch.setattr(tuning, "_probe", content.probe)
    prores = PresetBook.load().resolve(Target(format="mov", video_codec="prores", resolution="640x360"), info)
    ladder = [
        _settings(info, "h264", "mp4", "medium", resolution="320x180"),
        prores,
        _settings(info, "vp9", "webm", "medium"),
    ]
    found = tune_all(info, Timeline("single", [Clip(None, [(0.0, info.duration)])], {}), ladder)
    assert found[1].trials == () and found[1].settings == prores
    assert all(content.vmaf(s, t.settings.crf) in band(s) for s, t in zip(ladder, found) if s is not prores)
