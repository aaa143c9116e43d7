"""The sizes of the paper's language and translation models, torch-free: the task modules
(``ptb``, ``wmt``) read them to check options and batches, the model modules (``awd_lstm``,
``transformer``) to build, so neither kind imports the other."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LSTMPreset:
    """The model's size and its regularisation (Appendix C.3 for ``paper``)."""

    layers: int
    hidden: int
    embedding: int
    bptt: int
    dropout_output: float = 0.4  # locked dropout on the last layer's output
    dropout_hidden: float = 0.3  # between layers
    dropout_input: float = 0.65  # on the embedded input
    dropout_embedding: float = 0.1  # whole words dropped from the embedding
    weight_drop: float = 0.5  # on the hidden-to-hidden weights
    ar: float = 2.0
    tar: float = 1.0


LSTM_PRESETS = {
    "paper": LSTMPreset(layers=3, hidden=1150, embedding=400, bptt=70),
    "small": LSTMPreset(layers=2, hidden=200, embedding=100, bptt=35, dropout_input=0.3,
                        weight_drop=0.2),
}


@dataclass(frozen=True)
class TransformerPreset:
    """The Transformer's size, dropout and warmup (``base``: Vaswani et al.'s base model)."""

    d_model: int
    heads: int
    layers: int
    ffn: int
    dropout: float
    warmup: int


TRANSFORMER_PRESETS = {
    "base": TransformerPreset(d_model=512, heads=8, layers=6, ffn=2048, dropout=0.1, warmup=4000),
    "small": TransformerPreset(d_model=64, heads=4, layers=2, ffn=128, dropout=0.1, warmup=100),
}
