"""The web page in a real headless Chromium, driven over the DevTools protocol.

Needs Debian's ``chromium`` package (``/usr/bin/chromium``) and the
``websocket-client`` Python package; skipped with the reason otherwise.
Screenshots go to ``<tmp>/artifacts/`` and, when set, ``$CHARGEN_ARTIFACTS``.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_support import make_checkpoint, reference, thread_server

from chargen.checkpoint import load_checkpoint
from chargen.serve import Limits, create_app

CHROMIUM = next((p for p in (os.environ.get("CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium",
                             shutil.which("chromium-browser")) if p and Path(p).is_file()), None)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium: apt-get install -y chromium")]
websocket = pytest.importorskip("websocket", reason="needs websocket-client: pip install websocket-client")


class Browser:
    """Headless Chromium with one page, spoken to over the DevTools protocol (CDP)."""

    def __init__(self, profile: Path):
        self.proc = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "--window-size=1100,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.fail("Chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t["type"] == "page")
        # No Origin header: Chromium refuses DevTools websockets from foreign origins.
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True)
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        status = self.js("document.getElementById('status').textContent")
        raise AssertionError(f"timed out waiting for {expression}; page status: {status}")

    def screenshot(self, name: str, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        if os.environ.get("CHARGEN_ARTIFACTS"):
            target = Path(os.environ["CHARGEN_ARTIFACTS"])
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target / name)
        return path

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    chrome = Browser(tmp_path / "profile")
    try:
        chrome.call("Page.enable")
        chrome.call("Runtime.enable")
        yield chrome
    finally:
        chrome.close()


def open_page(browser: Browser, url: str) -> None:
    browser.call("Page.navigate", url=url)
    browser.wait_for("document.readyState === 'complete' && document.getElementById('model').options.length > 0")


def test_page_streams_a_generation(browser: Browser, tmp_path: Path) -> None:
    checkpoint = load_checkpoint(make_checkpoint(tmp_path / "tiny.safetensors"))
    with thread_server(create_app({"tiny": checkpoint}, None, None, Limits())) as url:
        open_page(browser, url + "/")
        browser.js("""(() => {
            const set = (id, value) => { const el = document.getElementById(id); el.value = value;
                                          el.dispatchEvent(new Event('change')); };
            set('prime', 'the '); set('length', '400'); set('temperature', '0.8'); set('seed', '42');
            document.getElementById('generate').click();
        })()""")
        browser.wait_for("document.getElementById('gen').textContent.length > 0")
        browser.wait_for("document.getElementById('status').textContent.startsWith('done')")
        shot = browser.screenshot("service_page_text.png", tmp_path / "artifacts")
        text = browser.js("document.getElementById('gen').textContent")
        status = browser.js("document.getElementById('status').textContent")
    assert shot.stat().st_size > 1000
    assert text, "no generated text on the page"
    assert text == reference(checkpoint, "the ", length=400, temperature=0.8, seed=42)["samples"][0]["text"]
    assert "seed 42" in status and "log-prob" in status
    assert browser.js("document.getElementById('primeout').textContent") == "the "


def test_page_beam_search_and_errors(browser: Browser, tmp_path: Path) -> None:
    checkpoint = load_checkpoint(make_checkpoint(tmp_path / "tiny.safetensors"))
    with thread_server(create_app({"tiny": checkpoint}, None, None, Limits(max_length=100))) as url:
        open_page(browser, url + "/")
        browser.js("""(() => {
            document.getElementById('decoder').value = 'beam';
            document.getElementById('decoder').dispatchEvent(new Event('change'));
            document.getElementById('length').value = '30';
            document.getElementById('beam').value = '3';
            document.getElementById('generate').click();
        })()""")
        browser.wait_for("document.getElementById('status').textContent.startsWith('done')")
        assert len(browser.js("document.getElementById('gen').textContent")) == 30
        browser.js("document.getElementById('length').value = '5000'; document.getElementById('generate').click()")
        browser.wait_for("document.getElementById('status').className === 'error'")
        assert "max_length=100" in browser.js("document.getElementById('status').textContent")


def test_page_draws_a_piano_roll_for_music_models(browser: Browser, tmp_path: Path) -> None:
    from chargen import midi_codec

    checkpoint = load_checkpoint(make_checkpoint(tmp_path / "music.safetensors", midi_codec.MidiCodec(), seed=4))
    with thread_server(create_app({"music": checkpoint}, None, None, Limits())) as url:
        open_page(browser, url + "/")
        browser.js("""document.getElementById('length').value = '300';
                      document.getElementById('seed').value = '5';
                      document.getElementById('generate').click()""")
        browser.wait_for("document.getElementById('status').textContent.startsWith('done')")
        browser.wait_for("!document.getElementById('roll').hidden")
        shot = browser.screenshot("service_page_midi.png", tmp_path / "artifacts")
        link = browser.js("document.getElementById('download').href")
        # Pixels drawn: some canvas pixel is not the background.
        painted = browser.js("""(() => {
            const c = document.getElementById('roll');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 60 || d[i + 1] > 60 || d[i + 2] > 60) n++;
            return n; })()""")
        midi = browser.js(f"fetch('{link}').then(r => r.arrayBuffer()).then(b => Array.from(new Uint8Array(b)))")
    assert shot.stat().st_size > 1000
    assert link.startswith("blob:") and painted > 0
    assert bytes(midi[:4]) == b"MThd"
