"""The model's shape (:class:`ModelConfig`), the size presets, and its cost per token; no torch needed here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from chargen.errors import ArgumentError, ChargenError
from chargen.options import check_fields, option
from chargen.terminal import has_controls

CELLS = ("lstm", "gru", "rnn")

#: Width of the learned label vector joined to each token's embedding (labelled models only).
DEFAULT_LABEL_EMBEDDING = 16


@dataclass
class ModelConfig:
    """The model's shape; its option fields (cell .. weight_drop) override a size preset's."""

    vocab_size: int
    cell: str = option("lstm", "Recurrent cell.", choices=CELLS)
    layers: int = option(2, "Recurrent layers.", low=1, high=64, default_text="the size preset's")
    hidden: int = option(512, "Hidden units per layer.", low=1, high=65536, default_text="the size preset's")
    embedding: int = option(128, "Embedding width.", low=1, high=65536, default_text="the size preset's")
    dropout: float = option(0.0, "Dropout between layers and before the output.", low=0, high=1, high_open=True,
                            default_text="the size preset's, or the minutes budget's choice")
    # DropConnect on the recurrent (hidden-to-hidden) weights while training, one mask per batch
    # (AWD-LSTM's weight drop): regularises the recurrence itself, which dropout between layers does not.
    weight_drop: float = option(0.0, "DropConnect on the recurrent weights while training (AWD-LSTM's weight "
                                "drop).", low=0, high=1, high_open=True,
                                default_text="0, or the minutes budget's choice")
    # Conditioning labels (names, in id order); empty: an unlabelled model, exactly as before labels existed.
    labels: list[str] = field(default_factory=list)
    label_embedding: int = DEFAULT_LABEL_EMBEDDING

    def __post_init__(self) -> None:
        self.labels = list(self.labels)
        check_label_names(self.labels)
        check_fields(self)
        if self.labels and self.label_embedding < 1:
            raise ChargenError("label_embedding must be positive")
        if not isinstance(self.vocab_size, int) or self.vocab_size < 1:
            raise ChargenError("vocab_size must be a positive whole number")

    @property
    def no_label(self) -> int:
        """The id of "no label" (the last row of the label table): unlabelled input to a labelled model."""
        return len(self.labels)

    def label_id(self, name: str | None) -> int | None:
        """The one rule for a requested label (CLI, service, replay): its id, ``no_label`` for None on a
        labelled model, None for None on an unlabelled one; ChargenError naming the labels otherwise."""
        if name is None:
            return self.no_label if self.labels else None
        if not self.labels:
            raise ArgumentError(f"label {name!r}: this model has no labels (train it with labels_from or label)")
        if name not in self.labels:
            raise ArgumentError(f"unknown label {name!r}; this model's labels: {', '.join(self.labels)}")
        return self.labels.index(name)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.labels:  # an unlabelled model's metadata stays what it always was
            del data["labels"], data["label_embedding"]
        if not self.weight_drop:  # likewise a model trained without weight drop
            del data["weight_drop"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def check_label_names(names: list[str]) -> None:
    """Label names: distinct, non-empty strings without control characters."""
    for name in names:
        if not isinstance(name, str) or not name.strip() or has_controls(name):
            raise ArgumentError(f"label {name!r} must be a non-empty name without control characters")
    if len(set(names)) != len(names):
        raise ArgumentError(f"label names must be distinct: {', '.join(names)}")


#: Named sizes for users who do not tune: (layers, hidden, embedding, dropout).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"layers": 1, "hidden": 128, "embedding": 32, "dropout": 0.0},
    "small": {"layers": 2, "hidden": 256, "embedding": 64, "dropout": 0.0},
    "medium": {"layers": 2, "hidden": 512, "embedding": 128, "dropout": 0.0},
    "large": {"layers": 3, "hidden": 768, "embedding": 128, "dropout": 0.2},
}
DEFAULT_PRESET = "medium"


#: Gate matrices per recurrent layer: torch stacks them in one weight of GATES * hidden rows.
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def parameter_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every weight of ``CharRNN(config)``'s state dict and its shape, without torch: what a checkpoint must
    hold, known before anything is allocated (a test holds it to the network's own state dict)."""
    rows = GATES[config.cell] * config.hidden
    shapes: dict[str, tuple[int, ...]] = {"embed.weight": (config.vocab_size, config.embedding)}
    width = config.embedding + (config.label_embedding if config.labels else 0)
    for layer in range(config.layers):
        shapes |= {f"rnn.weight_ih_l{layer}": (rows, width), f"rnn.weight_hh_l{layer}": (rows, config.hidden),
                   f"rnn.bias_ih_l{layer}": (rows,), f"rnn.bias_hh_l{layer}": (rows,)}
        width = config.hidden
    shapes |= {"head.weight": (config.vocab_size, config.hidden), "head.bias": (config.vocab_size,)}
    if config.labels:
        shapes["label_embed.weight"] = (len(config.labels) + 1, config.label_embedding)
    return shapes


def flops_per_token(config: ModelConfig) -> int:
    """Multiply-add FLOPs (x2) of one forward token; training costs ~3x this."""
    gates = GATES[config.cell]
    total = 0
    width = config.embedding + (config.label_embedding if config.labels else 0)
    for _ in range(config.layers):
        total += 2 * gates * config.hidden * (width + config.hidden)
        width = config.hidden
    total += 2 * config.hidden * config.vocab_size
    return total
