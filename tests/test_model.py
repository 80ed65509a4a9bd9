"""The model's own rules: dropout's cheaper mask, the layer-by-layer training stack, weight drop (DropConnect on
the recurrent weights) and its metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from chargen.errors import ChargenError
from chargen.model import CharRNN, ModelConfig, parameter_shapes
from chargen.model.dropout import LEVELS, dropout
from chargen.runs.checkpoint import load_checkpoint
from chargen.runs.layout import LAST
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
    for layer in range(model.config.layers):
        grad = getattr(model.rnn, f"weight_hh_l{layer}").grad
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


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_the_cheaper_dropout_drops_with_the_asked_probability_and_keeps_the_mean(p: float) -> None:
    torch.manual_seed(5)
    x = torch.ones(1001, 999)  # an odd count: the last 32-bit draw is half used
    y = dropout(x, p)
    assert abs((y == 0).float().mean().item() - p) < 0.003  # 1 M Bernoulli draws: sd 0.0005
    assert abs(y.mean().item() - 1.0) < 0.006
    kept = y[y != 0]
    assert torch.equal(kept, torch.full_like(kept, LEVELS / (LEVELS - round(p * LEVELS))))
    rows = (y == 0).float().mean(1)  # no structure: every row drops about p, not whole rows or halves
    assert rows.min().item() > p - 0.07 and rows.max().item() < p + 0.07
    assert abs((y[:, 0::2] == 0).float().mean().item() - (y[:, 1::2] == 0).float().mean().item()) < 0.006
    torch.manual_seed(5)
    assert torch.equal(dropout(x, p), y)  # the torch generator's: seeded runs repeat
    assert dropout(x, p, training=False) is x and dropout(x, 0.0) is x


def test_the_cheaper_dropout_passes_gradients_through_the_kept_elements_only() -> None:
    x = torch.randn(64, 50, requires_grad=True)
    y = dropout(x, 0.25)
    y.sum().backward()
    assert torch.equal(x.grad, (y != 0).float() * LEVELS / (LEVELS - LEVELS // 4))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_the_layer_by_layer_stack_is_the_fused_one(cell: str) -> None:
    """Training with dropout runs one fused layer at a time; without masks that is exactly the fused stack."""
    torch.manual_seed(1)
    model = CharRNN(ModelConfig(vocab_size=11, cell=cell, layers=3, hidden=16, embedding=8))
    x = model.embed(torch.randint(0, 11, (3, 7)))
    state = tuple(torch.randn_like(s) for s in model.init_state(3))
    hx = state if cell == "lstm" else state[0]
    fused_out, fused_state = model.rnn(x, hx)
    out, layered_state = model._layer_by_layer(x, hx)
    assert torch.equal(out, fused_out)
    for got, want in zip(layered_state if cell == "lstm" else (layered_state,),
                         fused_state if cell == "lstm" else (fused_state,), strict=True):
        assert torch.equal(got, want)
    assert "_layer_shapes" not in str(list(model.state_dict()))  # the shapes hold no weights of their own
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_dropout_between_layers_applies_in_training_only() -> None:
    torch.manual_seed(2)
    model = CharRNN(ModelConfig(vocab_size=11, layers=2, hidden=16, embedding=8, dropout=0.5))
    x = torch.randint(0, 11, (4, 9))
    model.eval()
    plain = model(x)[0]
    model.train()
    first, second = model(x)[0], model(x)[0]
    assert not torch.allclose(first, plain) and not torch.allclose(first, second)  # fresh masks each call
    first.sum().backward()
    assert all(p.grad is not None for p in model.rnn.parameters())
    model.eval()
    assert torch.equal(model(x)[0], plain)


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


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers, labels", [(1, ()), (3, ("a", "b"))])
def test_parameter_shapes_are_the_network_s_own(cell: str, layers: int, labels: tuple[str, ...]) -> None:
    """What a checkpoint is checked against (worked out without torch) is the state dict the network makes."""
    config = ModelConfig(vocab_size=13, cell=cell, layers=layers, hidden=12, embedding=6, labels=labels,
                         label_embedding=4 if labels else 16)
    made = {name: tuple(tensor.shape) for name, tensor in CharRNN(config).state_dict().items()}
    assert parameter_shapes(config) == made
