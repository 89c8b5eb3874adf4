"""Drive the running app as a designer would, for the browser tests and the UI benchmark: start `streamlit run
app.py` (and, for Remote mode, `python -m engine serve`) on loopback, open Debian's Chromium, draw on the Studio's
canvas, and read a process's CPU time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# A house as a designer draws it: canvas pixels of one pen stroke.
HOUSE_STROKE = [(80, 260), (80, 140), (220, 50), (360, 140), (360, 260), (80, 260)]


def free_port() -> int:
    """A TCP port nobody listens on, for a server started on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, expect: bytes | None = None, timeout: float = 120.0, proc=None) -> None:
    """Poll `url` until it answers (with `expect` as its body, when given); bounded by `timeout`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the process for {url} exited with {proc.returncode}")
        try:
            body = urllib.request.urlopen(url, timeout=2).read()
            if expect is None or body == expect:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def tiny_env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DESIGN_STUDIO_PROFILE": "tiny",
        "DESIGN_STUDIO_DEVICE": "cpu",
        "DESIGN_STUDIO_DATA_DIR": str(data_dir),
        "HF_HUB_OFFLINE": "1",
        **extra,
    }


@contextmanager
def streamlit_app(
    env: dict[str, str], port: int | None = None, log: Path | None = None, options: tuple[str, ...] = ()
) -> Iterator[tuple[str, int]]:
    """`streamlit run app.py` on loopback (with more `--server.x value` options, if given); yields its URL and
    process id, and stops it afterwards."""
    port = port or free_port()
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), *options]
    proc = subprocess.Popen(
        [*cmd, "--server.address", "127.0.0.1"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/_stcore/health", b"ok", proc=proc)
        yield url, proc.pid
    finally:
        stop(proc)
        if log:
            out.close()


@contextmanager
def engine_server(env: dict[str, str], port: int | None = None, token: str | None = None) -> Iterator[str]:
    """`python -m engine serve` on loopback (the engine a Remote-mode Studio talks to); yields its URL."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "engine", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if token:
        cmd += ["--token", token]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/openapi.json", proc=proc, timeout=180)
        yield url
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    """Terminate, and kill if it has not ended within 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(page, pid: int, seconds: float = 10.0) -> float:
    """CPU-seconds per second the process burns while `page` sits open and nobody touches it."""
    c0, t0 = cpu_seconds(pid), time.perf_counter()
    page.wait_for_timeout(seconds * 1000)
    return (cpu_seconds(pid) - c0) / (time.perf_counter() - t0)


def stroke(page, points) -> None:
    """One stroke of the current tool through `points` (pixels of the page's last canvas)."""
    canvas = page.locator("canvas").last
    canvas.wait_for(timeout=60_000)
    box = canvas.bounding_box()
    (x0, y0), *rest = points
    page.mouse.move(box["x"] + x0, box["y"] + y0)
    page.mouse.down()
    for x, y in rest:
        page.mouse.move(box["x"] + x, box["y"] + y, steps=6)
    page.mouse.up()


def draw_house(page) -> None:
    """One pen stroke on the Studio's canvas: a house outline."""
    stroke(page, HOUSE_STROKE)


def open_studio(browser, url: str, height: int = 1700):
    page = browser.new_page(viewport={"width": 1440, "height": height})
    page.set_default_timeout(90_000)
    page.goto(url)
    page.wait_for_selector("h1:has-text('Studio')", timeout=120_000)
    return page


def go_to_page(page, name: str, timeout: float = 120.0) -> None:
    """Go to a page by its link in the sidebar, as a designer does, and wait for its title. A click that lands
    while the page reruns can be lost (the sidebar redrawn under it): clicked again, at most three times."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    link = page.locator("[data-testid=stSidebarNav]").get_by_role("link", name=name)
    for attempt in range(3):
        link.click()
        try:
            page.wait_for_selector(f"h1:has-text('{name}')", timeout=timeout * 1000 / 3)
            return
        except PlaywrightTimeout:
            if attempt == 2:
                raise


def watch_messages(page) -> list[int]:
    """Count what the browser sends the server from now on (call before `goto`): every message the Streamlit
    client sends over its websocket is a rerun request or a widget's new value."""
    sent: list[int] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(1)))
    return sent


# Installed in the page just before Generate is clicked: a MutationObserver notes, in the page's own clock, each new
# progress text and the moment a render with a new seed is shown with Generate enabled again. It runs only when the
# page changes, so the measurement costs the machine nothing while the render runs.
OBSERVE = """() => {
  const seeds = () => [...document.querySelectorAll('[data-testid=stCaptionContainer]')]
    .map(e => e.innerText.trim()).filter(t => /^seed \\d+$/.test(t));
  const before = new Set(seeds());
  const b = window.__watch = {t0: performance.now(), progress: [], done: null};
  const check = () => {
    const now = performance.now() - b.t0;
    const bar = document.querySelector('[data-testid=stProgress]');
    const text = bar ? bar.innerText.trim() : '';
    if (text && (!b.progress.length || b.progress[b.progress.length - 1][1] !== text)) b.progress.push([now, text]);
    const button = [...document.querySelectorAll('button')].find(e => e.innerText.trim() === 'Generate');
    if (b.done === null && seeds().some(s => !before.has(s)) && button && !button.disabled) {
      b.done = now; obs.disconnect();
    }
  };
  const obs = new MutationObserver(check);
  obs.observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def generate_and_watch(page, timeout: float = 600.0) -> dict:
    """Click Generate and wait until a render with a new seed is on the page and Generate is enabled again. Returns
    the seconds from the click to then (`wall`) and the progress texts seen on the way (seconds after the click)."""
    page.evaluate(OBSERVE)
    generate = page.get_by_role("button", name="Generate")
    generate.click()
    started, clicks = time.monotonic(), 1
    while True:
        seen = page.evaluate("window.__watch")
        if seen["done"] is not None:
            return {"wall": seen["done"] / 1000, "progress": [(t / 1000, text) for t, text in seen["progress"]]}
        waited = time.monotonic() - started
        if waited > timeout:
            alerts = [a.inner_text()[:200] for a in page.locator("[data-testid=stAlert]").all()]
            raise TimeoutError(
                f"no new render {timeout:.0f} s after {clicks} click(s) on Generate; progress seen: "
                f"{seen['progress'][-3:]}; the page's messages: {alerts}"
            )
        # 30 s on, no render started and Generate still enabled: a rerun swallowed the click
        idle = not seen["progress"] and page.locator("[data-testid=stProgress]").count() == 0
        if idle and clicks < 3 and waited > 30 * clicks and generate.count() == 1 and generate.is_enabled():
            generate.click()
            clicks += 1
        page.wait_for_timeout(500)


def settled(page, pause: float = 0.5) -> None:
    """Wait until the page has finished its run (Streamlit's status widget gone): a widget's new value, sent once
    its debounce is over, has reached the server."""
    from playwright.sync_api import expect

    page.wait_for_timeout(pause * 1000)
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=60_000)


def set_slider(page, name: str, value) -> None:
    """Set a slider with the keyboard, as a user would (Home, then arrows until it shows `value`). Each key press
    reruns the page, so it waits for the slider to show the new value before the next press, and steps back if a
    slow rerun let presses pile up past the target."""
    slider = page.get_by_role("slider", name=name)

    def shown() -> str | None:
        now = slider.get_attribute("aria-valuetext") or slider.get_attribute("aria-valuenow")
        return None if now is None else str(now)

    def number(text: str | None) -> float | None:
        try:
            return float(text.replace(",", "")) if text is not None else None
        except ValueError:
            return None

    slider.focus()
    page.keyboard.press("Home")
    for _ in range(200):
        now = shown()
        if now == str(value):
            settled(page)
            if shown() == str(value):  # (a late rerun from an earlier press can still move it)
                return
            continue
        current, target = number(now), number(str(value))
        key = "ArrowLeft" if current is not None and target is not None and current > target else "ArrowRight"
        slider.focus()
        page.keyboard.press(key)
        for _ in range(40):  # up to 2 s for the rerun to show the new value
            page.wait_for_timeout(50)
            if shown() != now:
                break
    raise RuntimeError(f"the {name} slider never showed {value} (it shows {shown()})")


def rss_mb(pid: int) -> float:
    """A process's resident memory now, in MB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb / 1024
