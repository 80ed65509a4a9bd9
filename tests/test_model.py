"""The model's own rules: weight drop (DropConnect on the recurrent weights) and its metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from chargen.checkpoint import LAST, load_checkpoint
from chargen.errors import ChargenError
from chargen.model import CharRNN, ModelConfig
from tests.conftest import FABLES, assert_one_line_error, invoke


def _model(weight_drop: float, cell: str = "lstm") -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=11, cell=cell, layers=2, hidden=16, embedding=8, weight_drop=weight_drop))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_weight_drop_masks_the_recurrent_weights_in_training_only(cell: str) -> None:
    model = _model(0.5, cell)
    x = torch.randint(0, 11, (3, 7))
    model.eval()
    plain = model(x)[0]
    model.train()
    masked = model(x)[0]
    assert not torch.allclose(plain, masked)  # a masked recurrence changes the output ...
    masked.sum().backward()
    for name in model.recurrent_weights:
        grad = getattr(model.rnn, name).grad
        assert grad is not None and 0.3 < (grad == 0).float().mean().item() < 0.7  # ... through half the weights
    model.eval()
    assert torch.equal(model(x)[0], plain)  # and evaluation reads the weights unmasked


def test_weights_trained_with_weight_drop_are_the_module_s_own() -> None:
    """After optimizer steps through the masked path, the module's eval output is that of a fresh model
    loaded from its state dict: no masked or stale copy of the weights stays behind in the fused RNN."""
    model = _model(0.4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    x = torch.randint(0, 11, (4, 9))
    for _ in range(3):
        logits, _ = model(x)
        logits.logsumexp(-1).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    fresh = _model(0.0)
    fresh.load_state_dict(model.state_dict())
    model.eval()
    fresh.eval()
    assert torch.equal(model(x)[0], fresh(x)[0])


def test_weight_drop_zero_is_the_plain_model_and_its_metadata_unchanged() -> None:
    x = torch.randint(0, 11, (2, 5))
    with_field, without = _model(0.0), _model(0.0)
    assert torch.equal(with_field(x)[0], without(x)[0])
    assert "weight_drop" not in with_field.config.to_dict()  # metadata as before weight drop existed
    data = _model(0.3).config.to_dict()
    assert data["weight_drop"] == 0.3 and ModelConfig.from_dict(data).weight_drop == 0.3
    with pytest.raises(ChargenError, match="weight_drop"):
        ModelConfig(vocab_size=5, weight_drop=1.0)


def test_cli_weight_drop_reaches_the_checkpoint(tmp_path: Path, isolated_home: Path) -> None:
    result = invoke("train", str(FABLES), "--size", "tiny", "--weight-drop", "0.25", "--max-steps", "3",
                    "--batch-size", "4", "--seq-len", "16", "--out", str(tmp_path), "--run-name", "wd", "--quiet",
                    "--no-log")
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(tmp_path / "wd" / LAST).config.weight_drop == 0.25
    assert json.loads((tmp_path / "wd" / "run.json").read_text())["model_config"]["weight_drop"] == 0.25
    info = invoke("info", str(tmp_path / "wd"))
    assert info.returncode == 0 and "dropout 0.0, weight drop 0.25," in info.stdout, info.stdout + info.stderr
    assert_one_line_error(invoke("train", str(FABLES), "--weight-drop", "1.5", "--max-steps", "1"), "--weight-drop")
