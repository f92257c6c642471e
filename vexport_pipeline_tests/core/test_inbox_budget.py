"""An inbox pass with a time budget (the sensor's VEXPORT_INBOX_TICK_S) ends within it: a file is started only while
the time left covers the slowest file so far. Real manifests and media; only the clock is a stand-in, so the
files' cost is the same on any machine."""

import time

from vexport_pipeline.core.intake import inbox
from vexport_pipeline.core.settings import current


class Clock:
    """time.monotonic that moves only when a file is taken (`cost` seconds each, see the test)."""

    def __init__(self, cost: float):
        self.now, self.cost = 1000.0, cost

    def monotonic(self) -> float:
        return self.now

    def __getattr__(self, name: str):  # time.time and the rest as they are
        return getattr(time, name)


def test_a_pass_starts_no_file_it_cannot_finish_within_its_budget(home, media, monkeypatch):
    for name in ("a", "b", "c", "d"):
        manifest = f"id: {name}\nsource: {media['av']}\ntargets: [{{preset: web_720p}}]\n"
        (home.inbox / f"{name}.yaml").write_text(manifest)
    clock = Clock(cost=0.4)
    take = inbox._take_manifest

    def costly(*args, **kwargs):
        clock.now += clock.cost
        return take(*args, **kwargs)

    monkeypatch.setattr(inbox, "time", clock)
    monkeypatch.setattr(inbox, "_take_manifest", costly)
    accepted, rejected, held = inbox.process(home, current().policy, min_age_s=0, budget_s=1.0)
    # a at 0.0, b at 0.4 (0.8 < 1.0), c not at 0.8: 0.8 + 0.4 would end past the budget
    assert [a.record.export_id for a in accepted] == ["a", "b"] and not rejected
    assert [(h.file, h.waiting) for h in held] == [("c.yaml", True), ("d.yaml", True)]
    assert clock.now - 1000.0 <= 1.0

    clock.cost = 5.0  # slower than the budget: the first file of a pass is still taken
    accepted, _, held = inbox.process(home, current().policy, min_age_s=0, budget_s=1.0)
    assert [a.record.export_id for a in accepted] == ["c"] and [h.file for h in held] == ["d.yaml"]
