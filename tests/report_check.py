#!/usr/bin/python3
"""Checks the run report pages in a real browser: headless Chromium (Debian's chromium),
driven over the DevTools protocol on a pipe (--remote-debugging-pipe), so nothing but
the Python standard library is needed.

A small run trains for 2 epochs with --out and is resumed to 3 (without --metrics, so its
earlier epochs come back from its own report.html); a second run trains 2 epochs with a
cosine schedule; `cvae report` puts both on one page. Each page must load with no console
message of level error or warning, no uncaught exception, no request but the page itself
(everything inline), every picture decoded, and each chart a curve per run with one point
per epoch, axes with ticks, the epoch and a unit.

    tests/report_check.py                       the test (meson test runs it)
    tests/report_check.py --screenshot OUT.png PAGE.html [--width W]
                                                a picture of a page, as the README shows

Needs CVAE_BIN (meson test sets it) and chromium (the README's test command installs it):
without them the test fails, never skips.
"""
import argparse
import base64
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class Browser:
    """Headless Chromium and one page, over the DevTools protocol on fds 3 and 4."""

    def __init__(self, width=1100, height=900):
        self.profile = tempfile.mkdtemp(prefix="cvae-chromium-")
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()

        def child_fds():  # the browser reads commands on fd 3, writes replies to fd 4
            high_r, high_w = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--mute-audio",
             f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
             "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=child_fds, pass_fds=(3, 4))
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.buffer, self.next_id, self.events = b"", 0, []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width,
                  height=height, deviceScaleFactor=1, mobile=False)

    def _message(self, timeout=60):
        deadline = time.time() + timeout
        while b"\0" not in self.buffer:
            if time.time() > deadline:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self.from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method, session=False, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self.to_browser, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._message()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def load(self, url):
        self.events = []
        self.call("Page.navigate", session=True, url=url)
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            self.events.append(self._message())
        time.sleep(0.3)  # late console messages, if any
        self.call("Runtime.evaluate", session=True, expression="0")  # drains events
        return self.events

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", session=True, expression=expression,
                           returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"]["value"]

    def screenshot(self, path):
        height = self.evaluate("document.documentElement.scrollHeight")
        width = self.evaluate("document.documentElement.scrollWidth")
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width,
                  height=height, deviceScaleFactor=1, mobile=False)
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def close(self):
        try:
            self.call("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.to_browser)
        os.close(self.from_browser)
        shutil.rmtree(self.profile, ignore_errors=True)


def fail(msg):
    sys.exit(f"FAIL: {msg}")


def check_events(events, url):
    """No console error or warning, no exception, no request but the page (and data:)."""
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning",
                                                                           "assert"):
            fail(f"{url}: console {params['type']}: {params.get('args')}")
        if method == "Runtime.exceptionThrown":
            fail(f"{url}: exception: {params.get('exceptionDetails')}")
        if method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            fail(f"{url}: {params['entry']['level']}: {params['entry'].get('text')}")
        if method == "Network.requestWillBeSent":
            asked = params["request"]["url"]
            if asked != url and not asked.startswith("data:"):
                fail(f"{url}: the page asked for {asked}")


CHARTS = """(() => Array.from(document.querySelectorAll('figure.chart')).map(f => ({
  metric: f.dataset.metric,
  runs: Array.from(f.querySelectorAll('g.points')).map(g => g.querySelectorAll('circle').length),
  axes: f.querySelectorAll('line.axis').length,
  ticks: f.querySelectorAll('text.tick').length,
  labels: Array.from(f.querySelectorAll('text.label')).map(t => t.textContent),
  width: f.querySelector('svg').getBoundingClientRect().width})))()"""
IMAGES = """Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)"""


def check_page(browser, page, epochs, pictures):
    """The page loads cleanly; every chart has a curve per run with one point per epoch."""
    url = pathlib.Path(os.path.abspath(page)).as_uri()
    check_events(browser.load(url), url)
    charts = browser.evaluate(CHARTS)
    if len(charts) != 8:
        fail(f"{page}: {len(charts)} charts, expected 8")
    for c in charts:
        if c["runs"] != epochs:
            fail(f"{page}: chart {c['metric']} has points {c['runs']} per run, expected {epochs}")
        if c["axes"] != 2 or c["ticks"] < 4 or len(c["labels"]) != 2 or c["labels"][0] != "epoch":
            fail(f"{page}: chart {c['metric']} lacks its axes: {c}")
        if not c["width"] > 100:
            fail(f"{page}: chart {c['metric']} is not laid out: {c}")
    images = browser.evaluate(IMAGES)
    if len(images) != pictures or not all(images):
        fail(f"{page}: pictures {images}, expected {pictures} decoded")
    print(f"{page}: loads cleanly; 8 charts, points per run {epochs}; {pictures} pictures")


def cvae(*args):
    p = subprocess.run([os.environ["CVAE_BIN"], *args], capture_output=True, text=True)
    if p.returncode != 0:
        fail(f"cvae {' '.join(args)} exited {p.returncode}: {p.stderr}")
    return p.stdout


def write_data(folder):
    rng = np.random.default_rng(5)
    os.makedirs(folder)
    for split, n in (("train", 400), ("test", 100)):
        labels = rng.integers(0, 4, n)
        x = rng.integers(0, 60, size=(n, 8, 8))
        for i, c in enumerate(labels):
            x[i, 2 * c:2 * c + 2] += 180
        np.save(f"{folder}/{split}_images.npy", x.astype(np.uint8))
        np.save(f"{folder}/{split}_labels.npy", labels.astype(np.uint8))


def test():
    if not os.path.exists(CHROMIUM):
        fail("chromium is not installed (apt-get install chromium; the README's test command "
             "installs it)")
    work = tempfile.mkdtemp(prefix="cvae-report-")
    try:
        data, a, b = f"{work}/data", f"{work}/run a", f"{work}/run-b"
        write_data(data)
        common = ["--data", data, "--hidden", "32", "--latent", "4", "--device", "cpu"]
        cvae("train", *common, "--epochs", "2", "--out", a)
        cvae("train", *common, "--epochs", "3", "--out", a, "--resume", f"{a}/model.ckpt")
        cvae("train", *common, "--epochs", "2", "--out", b, "--lr-schedule", "cosine")
        cvae("report", a, b, "--out", f"{work}/compare.html")
        with open(f"{a}/report.html") as f:
            page = f.read()
        if "--resume" not in page or page.count('"epoch": ') != 3:
            fail("the resumed run's page lacks its command or its 3 epochs")
        browser = Browser()
        try:
            check_page(browser, f"{a}/report.html", [3], 3)
            check_page(browser, f"{b}/report.html", [2], 3)
            check_page(browser, f"{work}/compare.html", [3, 2], 0)
        finally:
            browser.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("PASS")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--screenshot", metavar="OUT.png")
    ap.add_argument("page", nargs="?")
    ap.add_argument("--width", type=int, default=1100)
    args = ap.parse_args()
    if not args.screenshot:
        return test()
    if not args.page:
        ap.error("--screenshot needs the page")
    browser = Browser(width=args.width)
    try:
        url = pathlib.Path(os.path.abspath(args.page)).as_uri()
        check_events(browser.load(url), url)
        browser.screenshot(args.screenshot)
    finally:
        browser.close()
    print(f"wrote {args.screenshot}")


if __name__ == "__main__":
    main()
