"""``fsnn report`` opened in a real browser: headless Chromium over the DevTools protocol.

The HTML tests (tests/test_report.py) read the page as text; these check what a reader
sees. One report of a small run folder (tests/run_fixtures.py, no model) is rendered by
the ``fsnn`` console script and loaded in headless Chromium at 1280x800, then:

- no console error, uncaught exception or browser log error while it loads;
- every ``<img>`` decodes (naturalWidth > 0): the embedded figures are real PNGs;
- the summary table is on screen in the first viewport, without scrolling;
- a screenshot of that viewport is not blank (many colours, non-white pixels);
- printed to PDF (``Page.printToPDF``) it has a sane page count, and the PDF's text holds
  every cell of the summary table, on the first page.

A control page with a console error, a script exception and a missing image checks that
the error collection itself works. The DevTools client is ~40 lines on websocket-client;
Chromium is found on PATH (Debian: ``apt-get install chromium``), else the tests skip
with that reason.
"""

from __future__ import annotations

import base64
import importlib
import io
import json
import os
import shutil
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from run_fixtures import make_results, make_run

websocket = pytest.importorskip(
    "websocket", reason="websocket-client is not installed (pip install -e '.[test]')"
)
pypdf = pytest.importorskip("pypdf", reason="pypdf is not installed (pip install -e '.[test]')")
Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed")

ROOT = Path(__file__).resolve().parents[2]
BROWSERS = (
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
    "chrome",
    "headless_shell",
)
WIDTH, HEIGHT = 1280, 800
LOCAL = urllib.request.build_opener(
    urllib.request.ProxyHandler({})
)  # DevTools is local: never a proxy


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


class DevTools:
    """A minimal Chrome DevTools Protocol client on one page target: calls and events."""

    def __init__(self, ws_url: str, timeout: float = 60) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True)
        self.timeout = timeout
        self.events: list[dict] = []
        self._id = 0
        self.errors: list[str] = []

    def _receive(self) -> dict:
        message = json.loads(self.ws.recv())
        if "method" in message:
            self.events.append(message)
        return message

    def call(self, method: str, **params) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = self._receive()
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def wait_for(self, method: str, after: int = 0) -> dict:
        """The first ``method`` event at or after index ``after`` of :attr:`events`."""
        deadline = time.monotonic() + self.timeout
        while True:
            for event in self.events[after:]:
                if event["method"] == method:
                    return event
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {self.timeout} s")
            self._receive()

    def evaluate(self, expression: str):
        result = self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:60]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> list[str]:
        """Load ``url``, wait for its load event and return the errors logged meanwhile."""
        start = len(self.events)
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired", after=start)
        self.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        return errors_in(self.events[start:])

    def close(self) -> None:
        self.ws.close()


def errors_in(events: list[dict]) -> list[str]:
    """Console errors, uncaught exceptions and browser log errors, one line each."""
    out = []
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(
                str(a.get("value", a.get("description", ""))) for a in params.get("args", [])
            )
            out.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            out.append(
                f"exception: {details.get('exception', {}).get('description') or details.get('text')}"
            )
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            out.append(
                f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip()
            )
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    binary = find_browser()
    if binary is None:
        pytest.skip(
            f"no Chromium/Chrome on PATH (tried {', '.join(BROWSERS)}); Debian: apt-get install chromium"
        )
    profile = tmp_path_factory.mktemp("chromium-profile")
    log = profile.parent / "chromium.log"
    args = [binary, "--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
            f"--user-data-dir={profile}", "--remote-debugging-port=0", "--remote-allow-origins=*",
            f"--window-size={WIDTH},{HEIGHT}", "about:blank"]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.insert(1, "--no-sandbox")  # Chromium's sandbox refuses to run as root (CI containers)
    with open(log, "wb") as sink:
        proc = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().count("\n") >= 1):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"Chromium did not start (exit {proc.poll()}):\n{log.read_text()[-2000:]}"
                )
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        tabs: list[DevTools] = []

        def new_page() -> DevTools:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT"
            )
            with LOCAL.open(request, timeout=30) as response:
                tools = DevTools(json.load(response)["webSocketDebuggerUrl"])
            tabs.append(tools)
            for domain in ("Runtime", "Log", "Page"):
                tools.call(f"{domain}.enable")
            tools.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1,
                       mobile=False)  # fmt: skip
            return tools

        yield new_page
        for tools in tabs:
            tools.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _fsnn_main():
    """The ``fsnn`` console script's function, found from pyproject.toml (survives module moves)."""
    target = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "scripts"
    ]["fsnn"]
    module, _, func = target.partition(":")
    return getattr(importlib.import_module(module), func)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    judge = np.full((3, 6), 4.0)
    judge[2, 1] = np.nan
    errors = np.full((3, 6), "", dtype=object)
    errors[2, 1] = "timeout"
    results = make_results(judge=judge, judge_error=errors, judge_missing="exclude",
                           readable=np.ones((3, 6), dtype=int))  # fmt: skip
    run = make_run(tmp_path_factory.mktemp("browser") / "run", results)
    out = run.parent / "report.html"
    assert _fsnn_main()(["report", str(run), "--out", str(out), "--examples", "6"]) == 0
    return out


@pytest.fixture(scope="module")
def page(browser, report) -> DevTools:
    """A tab holding the loaded report; ``page.errors``: what it logged while loading."""
    tools = browser()
    tools.errors = tools.open(report.as_uri())
    return tools


def test_the_report_loads_without_console_errors(page):
    assert page.errors == []


def test_every_image_decodes(page, report):
    sizes = page.evaluate(
        "Promise.all([...document.images].map(i => i.decode().then("
        "() => [i.naturalWidth, i.naturalHeight], () => [0, 0])))"
    )
    assert len(sizes) == report.read_text(encoding="utf-8").count("<img ") >= 5  # fig2..fig6
    assert all(w > 0 and h > 0 for w, h in sizes), sizes


def test_the_summary_table_is_in_the_first_viewport(page):
    box = page.evaluate(
        "(() => { const t = document.getElementById('summary'); const r = t.getBoundingClientRect();"
        " return {top: r.top, height: r.height, width: r.width, scrollY: window.scrollY,"
        " inner: window.innerHeight, shown: getComputedStyle(t).visibility}; })()"
    )
    assert box["scrollY"] == 0 and box["inner"] == HEIGHT
    assert 0 <= box["top"] < box["inner"], box
    assert box["height"] > 0 and box["width"] > 0 and box["shown"] == "visible", box


def test_the_first_screen_is_not_blank(page):
    png = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
    image = Image.open(io.BytesIO(png)).convert("RGB")
    assert image.size == (WIDTH, HEIGHT)
    pixels = np.asarray(image).reshape(-1, 3)
    colours = len(np.unique(pixels, axis=0))
    non_white = float(np.mean(pixels.min(axis=1) < 245))
    assert colours > 16, colours
    assert non_white > 0.01, non_white  # text, table borders and header cells


def _compact(text: str) -> str:
    return "".join(text.split())


def test_the_printed_pdf_holds_the_summary_numbers(page):
    cells = page.evaluate(
        "[...document.querySelectorAll('#summary tr')].map(r => [...r.cells].map(c => c.innerText.trim()))"
    )
    numbers = [c for row in cells[1:] for c in row[1:]]  # every data cell: counts, %, intervals
    assert any("%" in c for c in numbers) and any("[" in c for c in numbers), numbers
    pdf = base64.b64decode(page.call("Page.printToPDF", printBackground=True)["data"])
    assert pdf[:5] == b"%PDF-"
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    assert 2 <= len(reader.pages) <= 40, len(reader.pages)  # five figures do not fit one page
    first = _compact(reader.pages[0].extract_text())
    missing = [c for c in numbers if _compact(c) not in first]
    assert not missing, f"summary cells not on the PDF's first page: {missing}"
    assert "Summary" in first and _compact(cells[0][0]) in first


def test_the_error_collection_sees_errors(browser, tmp_path):
    control = tmp_path / "broken.html"
    control.write_text(
        '<!DOCTYPE html><html><body><img src="missing.png">'
        "<script>console.error('control error'); undefined_function();</script></body></html>",
        encoding="utf-8",
    )
    found = browser().open(control.as_uri())
    assert any("control error" in e for e in found), found
    assert any(e.startswith("exception:") and "undefined_function" in e for e in found), found
    assert any(e.startswith("log") and "missing.png" in e for e in found), found
