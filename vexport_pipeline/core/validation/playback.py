"""Real-client playback: load renditions in headless Chromium (Debian's, driven by Playwright) and
check that the browser decodes them at the expected size and duration.

Files are served from a loopback HTTP server started here; the browser reaches nothing else."""

from __future__ import annotations

import contextlib
import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

from vexport_pipeline.core.errors import ProcessingError
from vexport_pipeline.core.settings import current

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]

PROBE_JS = """async (src) => {
  const v = document.createElement('video');
  v.muted = true; v.preload = 'auto'; v.src = src;
  document.body.appendChild(v);
  const waitFor = (ev) => new Promise((ok, bad) => {
    v.addEventListener(ev, ok, {once: true});
    const why = () => 'media error ' + (v.error && v.error.code) + ': ' + (v.error && v.error.message);
    v.addEventListener('error', () => bad(new Error(why())), {once: true});
    setTimeout(() => bad(new Error('timed out waiting for ' + ev)), 20000);
  });
  await waitFor('loadedmetadata');
  await v.play();
  await new Promise(r => setTimeout(r, 600));
  v.pause();
  const played = v.currentTime;
  v.currentTime = Math.max(0, v.duration - 0.2);
  await waitFor('seeked');
  const q = v.getVideoPlaybackQuality();
  return {width: v.videoWidth, height: v.videoHeight, duration: v.duration, played: played,
          frames: q.totalVideoFrames, dropped: q.droppedVideoFrames, error: v.error ? v.error.message : null};
}"""


def chromium() -> str | None:
    return current().chromium or shutil.which("chromium") or shutil.which("chromium-browser")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no access log on stderr
        pass


@contextlib.contextmanager
def _serve(folder: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def play(files: list[Path], *, executable: str | None = None) -> list[dict]:
    """For each file, what the browser saw: size, duration, frames shown, or the error it gave."""
    from playwright.sync_api import sync_playwright

    exe = executable or chromium()
    if not exe:
        raise ProcessingError(
            "no Chromium found (install Debian's chromium, or set VEXPORT_CHROMIUM)", code="playback_failed"
        )
    results = []
    for f in files:  # each file from its own folder, so any name works
        with _serve(Path(f).parent) as base, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page()
                page.goto(f"{base}/")
                try:
                    results.append({"file": str(f), **page.evaluate(PROBE_JS, f"{base}/{Path(f).name}")})
                except Exception as exc:  # the page's promise rejected: the browser could not play it
                    results.append({"file": str(f), "error": str(exc).splitlines()[0]})
            finally:
                browser.close()
    return results


WEB_CODECS = {("mp4", "h264"), ("webm", "vp9"), ("webm", "vp8"), ("mp4", "av1"), ("webm", "av1")}


def playback_issues(seen: dict, width: int, height: int, duration: float, frame: float) -> list[tuple[str, str]]:
    """(code, message) for each way the browser's view differs from what the file should be."""
    if seen.get("error"):
        return [("playback_failed", f"Chromium could not play it: {seen['error']}")]
    out = []
    if (seen["width"], seen["height"]) != (width, height):
        out.append(("playback_size", f"Chromium shows {seen['width']}x{seen['height']}, expected {width}x{height}"))
    if abs(seen["duration"] - duration) > frame + 0.05:
        out.append(("playback_duration", f"Chromium reports {seen['duration']:.3f} s, expected {duration:.3f} s"))
    if not seen["frames"] or seen["played"] <= 0:
        out.append(("playback_stalled", "Chromium decoded no frames while playing"))
    return out
