"""Merity et al.'s AWD-LSTM, the paper's language model (``lookbench.tasks.ptb`` trains it; a
module of its own so that the task's class is read without torch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lookbench.tasks.sizes import LSTMPreset


class LockedDropout(nn.Module):
    """Dropout with one mask per sequence, shared by every time step (variational)."""

    def forward(self, x: torch.Tensor, p: float) -> torch.Tensor:
        if not self.training or p == 0:
            return x
        mask = x.new_empty(1, x.size(1), x.size(2)).bernoulli_(1 - p) / (1 - p)
        return x * mask


class AWDLSTM(nn.Module):
    """Merity et al.'s AWD-LSTM language model (tied embedding and output weights)."""

    def __init__(self, vocab: int, p: LSTMPreset) -> None:
        super().__init__()
        self.p = p
        self.encoder = nn.Embedding(vocab, p.embedding)
        sizes = [p.embedding] + [p.hidden] * (p.layers - 1) + [p.embedding]  # tie the last
        self.rnns = nn.ModuleList(nn.LSTM(sizes[i], sizes[i + 1]) for i in range(p.layers))
        self.decoder = nn.Linear(p.embedding, vocab)
        self.decoder.weight = self.encoder.weight
        self.lockdrop = LockedDropout()
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, words: torch.Tensor, hidden: list[tuple[torch.Tensor, torch.Tensor]]
                ) -> tuple[torch.Tensor, list, torch.Tensor, torch.Tensor]:
        """Logits, the new hidden state, and the last layer's output before and after its
        dropout (for TAR and AR)."""
        p = self.p
        weight = self.encoder.weight
        if self.training and p.dropout_embedding:  # drop whole words from the vocabulary
            keep = weight.new_empty(weight.size(0), 1).bernoulli_(1 - p.dropout_embedding)
            weight = weight * keep / (1 - p.dropout_embedding)
        x = self.lockdrop(F.embedding(words, weight), p.dropout_input)
        new_hidden = []
        raw = x
        for i, rnn in enumerate(self.rnns):
            w = rnn.weight_hh_l0
            dropped = F.dropout(w, p.weight_drop, self.training) if p.weight_drop else w
            raw, h = functional_call(rnn, {"weight_hh_l0": dropped}, (x, hidden[i]))
            new_hidden.append(h)
            last = i == len(self.rnns) - 1
            x = self.lockdrop(raw, p.dropout_output if last else p.dropout_hidden)
        return self.decoder(x), new_hidden, raw, x

    def init_hidden(self, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        w = self.encoder.weight
        return [(w.new_zeros(1, batch, rnn.hidden_size), w.new_zeros(1, batch, rnn.hidden_size))
                for rnn in self.rnns]


def detach(hidden: list) -> list:
    """The hidden state cut from the graph (truncated backpropagation through time)."""
    return [(h.detach(), c.detach()) for h, c in hidden]
