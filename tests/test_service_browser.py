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

from chargen.runs.checkpoint import load_checkpoint
from chargen.serve import Limits, create_app

CHROMIUM = next((p for p in (os.environ.get("CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium",
                             shutil.which("chromium-browser")) if p and Path(p).is_file()), None)
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium: apt-get install -y chromium")]
websocket = pytest.importorskip("websocket", reason="needs websocket-client: pip install websocket-client")


#: A name Chromium resolves to 127.0.0.1, as a rebinding attacker's DNS would.
REBIND = "rebind.attacker.test"


class Browser:
    """Headless Chromium with one page, spoken to over the DevTools protocol (CDP)."""

    def __init__(self, profile: Path):
        self.proc = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
             f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "--window-size=1100,900", f"--host-resolver-rules=MAP {REBIND} 127.0.0.1", "about:blank"],
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

    def click(self, element_id: str) -> None:
        """A real mouse click (a user gesture, as audio playback may need) in the element's middle."""
        box = self.js(f"""(() => {{ const el = document.getElementById('{element_id}'); el.scrollIntoView();
            const r = el.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()""")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

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


def test_a_rebound_name_gets_nothing_and_the_right_names_work(browser: Browser, tmp_path: Path) -> None:
    """DNS rebinding from the browser's side: a page served under the attacker's name (resolved to
    127.0.0.1) is refused, and so is that origin's fetch of the API; 127.0.0.1 and localhost work, with the
    page's style and script loaded under a CSP that runs no inline code."""
    checkpoint = load_checkpoint(make_checkpoint(tmp_path / "tiny.safetensors"))
    with thread_server(create_app({"tiny": checkpoint}, f"sqlite:///{tmp_path / 'h.db'}", None, Limits())) as url:
        port = url.rsplit(":", 1)[1]
        # The attacker's page would bring its own CSP: run this origin's script as if it were theirs.
        browser.call("Page.setBypassCSP", enabled=True)
        browser.call("Page.navigate", url=f"http://{REBIND}:{port}/")
        browser.wait_for("document.readyState === 'complete' && document.body !== null")
        assert "does not answer to the host name" in browser.js("document.body.innerText")
        assert browser.js("document.getElementById('model') === null")
        for path in ("/v1/generations", "/v1/models", "/static/page.js"):
            assert browser.js(f"fetch('{path}').then(r => r.status)") == 421
        browser.call("Page.setBypassCSP", enabled=False)
        for host in ("127.0.0.1", "localhost"):
            open_page(browser, f"http://{host}:{port}/")
            assert browser.js("getComputedStyle(document.querySelector('main')).maxWidth") == "960px"
            assert browser.js("fetch('/v1/generations').then(r => r.status)") == 200
        # No inline code runs: an injected handler is blocked by the CSP (the page itself never makes one).
        browser.js("""document.body.insertAdjacentHTML('beforeend',
                      '<img src="/nothing" onerror="window.injected = 1">'); 0""")
        time.sleep(0.5)
        assert browser.js("window.injected === undefined")


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
    from chargen.codecs.midi import MidiCodec

    checkpoint = load_checkpoint(make_checkpoint(tmp_path / "music.safetensors", MidiCodec(), seed=4))
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


#: The playhead's colour on the piano roll (the page's drawRoll).
PLAYHEAD_PIXELS = """(() => {
    const c = document.getElementById('roll');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] === 255 && d[i + 1] === 200 && d[i + 2] === 40) n++;
    return n; })()"""


def test_page_plays_music_with_a_moving_playhead(browser: Browser, tmp_path: Path) -> None:
    from chargen.codecs.midi import MidiCodec

    checkpoint = load_checkpoint(make_checkpoint(tmp_path / "music.safetensors", MidiCodec(), seed=4))
    database = f"sqlite:///{tmp_path / 'history.db'}"
    with thread_server(create_app({"music": checkpoint}, database, None, Limits())) as url:
        open_page(browser, url + "/")
        browser.js("""document.getElementById('length').value = '200';
                      document.getElementById('seed').value = '5';
                      document.getElementById('generate').click()""")
        browser.wait_for("document.getElementById('status').textContent.startsWith('done')")
        browser.wait_for("!document.getElementById('player').hidden")
        notes = browser.js("window.chargenPlayer.notes")
        assert notes and browser.js("window.chargenPlayer.context") is None  # no audio before Play
        assert browser.js(PLAYHEAD_PIXELS) == 0

        browser.click("play")
        assert browser.wait_for("window.chargenPlayer.context && window.chargenPlayer.context.state") == "running"
        browser.wait_for("window.chargenPlayer.scheduled > 0")
        browser.wait_for("window.chargenPlayer.position > 4", timeout=60)  # the audio clock moves: it plays
        browser.js("document.getElementById('roll').scrollIntoView()")
        time.sleep(0.2)  # a frame or two with the playhead drawn
        shot = browser.screenshot("service_page_music.png", tmp_path / "artifacts")
        shutil.copy(shot, "/tmp/chargen-page-music.png")
        playhead = browser.js(PLAYHEAD_PIXELS)
        state = browser.js("({scheduled: chargenPlayer.scheduled, playing: chargenPlayer.playing, "
                           "clock: document.getElementById('clock').textContent})")
        first_due = sum(1 for note in notes if note[1] < 4)
        browser.click("halt")
        browser.wait_for("!window.chargenPlayer.playing")
        browser.wait_for("window.chargenPlayer.voices.size === 0")  # every voice stopped
        stopped_playhead = browser.js(PLAYHEAD_PIXELS)

        # The same piece opened from the page's history: the same notes, ready to play.
        browser.wait_for("document.querySelectorAll('.history-item').length === 1")
        browser.js("document.querySelector('.history-item').click()")
        browser.wait_for("document.getElementById('status').textContent.startsWith('history')")
        browser.wait_for("!document.getElementById('download').hidden")
        reopened = browser.js("window.chargenPlayer.notes")
        download = browser.js("""fetch(document.getElementById('download').href).then(r => r.arrayBuffer())
                                 .then(b => Array.from(new Uint8Array(b.slice(0, 4))))""")
    assert shot.stat().st_size > 1000
    assert playhead >= 300 // 2, "the playhead line is drawn on the roll while playing"
    assert state["playing"] and state["scheduled"] >= first_due and state["clock"].startswith("0:04")
    assert stopped_playhead == 0, "Stop takes the playhead away"
    assert reopened == notes
    assert bytes(download) == b"MThd"


def test_page_history_opens_searches_and_reruns(browser: Browser, tmp_path: Path) -> None:
    from test_service_curves import write_curve

    from chargen.runs.layout import BEST

    run = tmp_path / "runs" / "tiny"
    run.mkdir(parents=True)
    write_curve(run, [2.9, 2.7, 2.6])
    models = {"tiny": load_checkpoint(make_checkpoint(run / BEST)),
              "other": load_checkpoint(make_checkpoint(tmp_path / "other.safetensors", seed=3))}
    database = f"sqlite:///{tmp_path / 'history.db'}"
    with thread_server(create_app(models, database, None, Limits())) as url, \
            httpx.Client(base_url=url, timeout=60) as http:
        first = http.post("/v1/generate", json={"model": "tiny", "prime": "the cat ", "length": 60,
                                                "temperature": 0.7, "top_k": 8, "seed": 11}).json()
        second = http.post("/v1/generate", json={"model": "other", "prime": "a dog ", "length": 40,
                                                 "greedy": True}).json()
        open_page(browser, url + "/")
        browser.wait_for("document.querySelectorAll('.history-item').length === 2")
        listed = browser.js("Array.from(document.querySelectorAll('.history-item')).map(e => e.dataset.id)")
        assert listed == [second["history_id"], first["history_id"]]  # newest first

        browser.js("""document.getElementById('history-model').value = 'tiny';
                      document.getElementById('history-model').dispatchEvent(new Event('change'))""")
        browser.wait_for("document.querySelectorAll('.history-item').length === 1")
        assert browser.js("document.querySelector('.history-item').dataset.id") == first["history_id"]
        browser.js("""document.getElementById('history-model').value = '';
                      const q = document.getElementById('history-q'); q.value = 'A DOG';
                      q.dispatchEvent(new Event('input'))""")
        browser.wait_for(f"""document.querySelectorAll('.history-item').length === 1 &&
                             document.querySelector('.history-item').dataset.id === '{second["history_id"]}'""")

        browser.js("document.getElementById('history-q').value = ''; loadHistory()")
        browser.wait_for("document.querySelectorAll('.history-item').length === 2")
        browser.js(f"document.querySelector('.history-item[data-id=\"{first['history_id']}\"]').click()")
        browser.wait_for("document.getElementById('status').textContent.startsWith('history')")
        shown = browser.js("['primeout', 'gen'].map(id => document.getElementById(id).textContent)")
        opened = browser.js("document.getElementById('opened').hidden ? null : "
                            "document.getElementById('opened-what').textContent")
        browser.js("window.scrollTo(0, 0)")
        browser.screenshot("service_page_history_open.png", tmp_path / "artifacts")
        record = http.get(f"/v1/generations/{first['history_id']}").json()
        assert shown == [record["prime"], record["outputs"][0]["text"]]
        assert shown[1] == first["samples"][0]["text"]

        browser.click("rerun")  # fills the form with the record's settings and generates again
        browser.wait_for("document.getElementById('status').textContent.startsWith('done')")
        form = browser.js("""['model', 'decoder', 'length', 'temperature', 'seed', 'prime']
                             .map(id => document.getElementById(id).value)""")
        rerun_text = browser.js("document.getElementById('gen').textContent")
        browser.wait_for("document.querySelectorAll('.history-item').length === 3")
        newest = http.get("/v1/generations", params={"limit": 1}).json()["generations"][0]

        browser.wait_for("document.querySelector('.curve[data-model=\"tiny\"] polyline.val_loss') !== null")
        curves = browser.js("""Array.from(document.querySelectorAll('.curve')).map(c => [c.dataset.model,
            c.querySelectorAll('polyline').length, c.querySelector('p').textContent])""")
        browser.screenshot("service_page_history.png", tmp_path / "artifacts")
    assert opened.startswith(f"generation {record['short_id']} (tiny") and "seed 11" in opened
    assert form == ["tiny", "sample", "60", "0.7", "11", "the cat "]
    assert rerun_text == first["samples"][0]["text"]  # same settings, same seed: the same text
    assert newest["id"] != first["history_id"] and newest["params"] == record["params"]
    assert newest["prime"] == "the cat " and newest["seed"] == 11
    assert curves[0][:2] == ["tiny", 2] and curves[0][2].startswith("improving")
    assert curves[1][:2] == ["other", 0] and "no training curve" in curves[1][2]
