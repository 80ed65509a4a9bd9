"""The page's label picker in a real headless Chromium (skipped, with the reason, without one)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from service_support import reference, thread_server
from test_service_browser import CHROMIUM, browser, open_page  # noqa: F401  (browser: the fixture)

from chargen.codecs.text import TextCodec
from chargen.model import CharRNN, ModelConfig
from chargen.runs.checkpoint import load_checkpoint, save_weights
from chargen.serve import Limits, create_app

ALPHABET = "abcdefghijklmnopqrstuvwxyz .,\n"


@pytest.fixture
def labelled_checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=len(ALPHABET), layers=1, hidden=24, embedding=8,
                                labels=["verse", "prose", "song"], label_embedding=6))
    with torch.no_grad():
        model.label_embed.weight.mul_(8)  # labels that matter, as a trained model's do
    path = tmp_path / "labelled.safetensors"
    save_weights(path, model, TextCodec(ALPHABET), {"best_val_loss": 2.5, "step": 0})
    return path


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium: apt-get install -y chromium")
def test_page_label_picker(browser, labelled_checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    """The page offers a labelled model's labels and sends the chosen one (a real headless Chromium)."""
    checkpoint = load_checkpoint(labelled_checkpoint)
    with thread_server(create_app({"lab": checkpoint}, None, None, Limits())) as url:
        open_page(browser, url + "/")
        browser.wait_for("!document.getElementById('label-box').hidden")
        options = browser.js("Array.from(document.getElementById('label').options).map((o) => o.value).join(',')")
        browser.js("""(() => {
            const set = (id, value) => { const el = document.getElementById(id); el.value = value;
                                          el.dispatchEvent(new Event('change')); };
            set('label', 'song'); set('prime', 'the '); set('length', '60'); set('seed', '8');
            document.getElementById('generate').click();
        })()""")
        browser.wait_for("document.getElementById('status').textContent.startsWith('done')")
        text = browser.js("document.getElementById('gen').textContent")
    assert options == ",verse,prose,song"
    want = {label: reference(checkpoint, "the ", length=60, temperature=0.8, seed=8, label=label)["samples"][0]["text"]
            for label in ("song", None)}
    assert text == want["song"] != want[None]
