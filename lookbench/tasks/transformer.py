"""The Transformer of Vaswani et al. (base), its batches and its decoding (greedy, beam
search, BLEU), as ``lookbench.tasks.wmt`` trains and evaluates it (a module of its own so
that the task's class is read without torch)."""

from __future__ import annotations

import math

import torch
from torch import nn

from lookbench.tasks.sizes import TransformerPreset
from lookbench.tasks.wmt_data import BOS, EOS, MAX_LEN, PAD, Parallel, token_batches


def collate(pairs: list[tuple[list[int], list[int]]], index: list[int], device: torch.device
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(source, decoder input ``<s> y``, target ``y </s>``), padded."""
    src = [torch.tensor(pairs[i][0]) for i in index]
    tgt = [torch.tensor(pairs[i][1]) for i in index]
    dec = [torch.cat([torch.tensor([BOS]), t[:-1]]) for t in tgt]
    pad = nn.utils.rnn.pad_sequence
    return (pad(src, batch_first=True, padding_value=PAD).to(device),
            pad(dec, batch_first=True, padding_value=PAD).to(device),
            pad(tgt, batch_first=True, padding_value=PAD).to(device))


class Transformer(nn.Module):
    """Transformer base with a shared, scaled embedding and sinusoidal positions; the output
    projection is the embedding (three-way tying, Vaswani et al. section 3.4)."""

    def __init__(self, vocab: int, p: TransformerPreset) -> None:
        super().__init__()
        self.scale = math.sqrt(p.d_model)
        self.embed = nn.Embedding(vocab, p.d_model, padding_idx=PAD)
        nn.init.normal_(self.embed.weight, 0, p.d_model ** -0.5)
        self.core = nn.Transformer(p.d_model, p.heads, p.layers, p.layers, p.ffn, p.dropout,
                                   batch_first=True, norm_first=False)
        # (its evaluation fast path packs padded batches as prototype nested tensors, with a
        # warning each time; the plain path computes the same)
        self.core.encoder.enable_nested_tensor = self.core.encoder.use_nested_tensor = False
        self.dropout = nn.Dropout(p.dropout)
        position = torch.arange(MAX_LEN + 1)[:, None]
        freq = torch.exp(torch.arange(0, p.d_model, 2) * (-math.log(10_000.0) / p.d_model))
        table = torch.zeros(MAX_LEN + 1, p.d_model)
        table[:, 0::2], table[:, 1::2] = torch.sin(position * freq), torch.cos(position * freq)
        self.register_buffer("positions", table, persistent=False)

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.embed(ids) * self.scale + self.positions[: ids.size(1)])

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        return self.core.encoder(self._embed(src), src_key_padding_mask=src == PAD)

    def decode(self, memory: torch.Tensor, src: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
        causal = nn.Transformer.generate_square_subsequent_mask(dec.size(1), device=dec.device,
                                                                dtype=torch.bool)
        out = self.core.decoder(self._embed(dec), memory, tgt_mask=causal,
                                tgt_key_padding_mask=dec == PAD,
                                memory_key_padding_mask=src == PAD)
        return out @ self.embed.weight.t()

    def forward(self, src: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(src), src, dec)


@torch.no_grad()
def bleu(model: Transformer, corpus: Parallel, max_tokens: int, device: torch.device,
          beam: int = 1, length_penalty: float = 0.6) -> float:
    """BLEU on the test set (sacrebleu, on the BPE-joined words), decoding greedily where
    ``beam`` is 1, else by beam search of that width."""
    import sacrebleu

    hyps: list[str] = []
    refs: list[str] = []
    for index in token_batches(corpus.test, max_tokens):
        src, _, tgt = collate(corpus.test, index, device)
        if beam == 1:
            out = greedy(model, src)
        else:
            out = beam_search(model, src, beam, length_penalty)[0][:, 0]
        for row, ref in zip(out.tolist(), tgt.tolist()):
            hyps.append(words_of(row, corpus.words))
            refs.append(words_of(ref, corpus.words))
    return float(sacrebleu.corpus_bleu(hyps, [refs]).score)


@torch.no_grad()
def greedy(model: Transformer, src: torch.Tensor) -> torch.Tensor:
    """Greedy decoding of a batch of sources, for up to the batch's source length + 50 tokens
    (at most ``MAX_LEN``, the model's positions, as beam search):
    (batch, tokens) ids, each row's output ending at its first EOS (what follows is filler)."""
    memory = model.encode(src)
    out = torch.full((src.size(0), 1), BOS, device=src.device)
    done = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)
    for _ in range(min(src.size(1) + 50, MAX_LEN)):
        nxt = model.decode(memory, src, out)[:, -1].argmax(-1)
        out = torch.cat([out, nxt[:, None]], dim=1)
        done |= nxt == EOS
        if bool(done.all()):
            break
    return out[:, 1:]


@torch.no_grad()
def beam_search(model: Transformer, src: torch.Tensor, beam: int, alpha: float = 0.6,
                max_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search of width ``beam`` over a batch of sources (Vaswani et al.: 4, α = 0.6): the
    ``beam`` best hypotheses Y of each sentence by log p(Y|X) / lp(Y), GNMT's length penalty
    lp(Y) = ((5 + |Y|)/6)^α, best first, as ids (batch, beam, length; each ending with EOS or
    at the maximum length, then PAD) and their scores (batch, beam).

    |Y| counts the EOS; outputs are at most the source's length (with its EOS) + 50 tokens long,
    or ``max_len``. The beams of all sentences are rows of one batch, over the encoder's output
    computed once; PAD and BOS are never generated. A sentence stops, and leaves the batch, as
    soon as no live hypothesis can still beat its best finished one (log-probabilities only
    fall as a hypothesis grows, and lp never exceeds its value at the maximum length).
    """
    device, k = src.device, beam
    limits = ((src != PAD).sum(1) + 50).clamp(max=MAX_LEN).tolist() if max_len is None \
        else [max_len] * src.size(0)
    width = max(limits)
    out_ids = torch.full((src.size(0), k, width), PAD, device=device)
    out_scores = torch.full((src.size(0), k), -math.inf, device=device)
    # the sentences still searching: their rows in the output, limits, and per sentence k live
    # hypotheses (<s> + ids, log-probability) and the k best finished ones (ids, score)
    active = list(range(src.size(0)))
    limit = torch.tensor(limits, device=device)
    bound_lp = ((5 + limit.double()) / 6) ** alpha
    memory = model.encode(src).repeat_interleave(k, 0)
    src = src.repeat_interleave(k, 0)
    ids = torch.full((src.size(0), width + 1), PAD, device=device)
    ids[:, 0] = BOS
    live = torch.full((len(active), k), -math.inf, device=device)
    live[:, 0] = 0.0  # the k beams start identical: only the first one extends
    fin_ids = torch.full((len(active), k, width), PAD, device=device)
    fin_scores = torch.full((len(active), k), -math.inf, device=device)
    for n in range(1, width + 1):  # the output's length after this step
        a = len(active)
        logp = model.decode(memory, src, ids[:, :n])[:, -1].float().log_softmax(-1)
        logp[:, PAD] = logp[:, BOS] = -math.inf
        cand = (live.reshape(-1, 1) + logp).view(a, k, -1)
        lp = ((5 + n) / 6) ** alpha
        prefix = ids.view(a, k, -1)[:, :, 1:n]
        # finished: every live hypothesis + EOS, and at the length limit the live ones as they are
        ended = torch.full((a, k, width), PAD, device=device)
        ended[:, :, : n - 1] = prefix
        ended[:, :, n - 1] = EOS
        new_scores = [fin_scores, cand[:, :, EOS] / lp]
        new_ids = [fin_ids, ended]
        cand[:, :, EOS] = -math.inf
        top, index = cand.view(a, -1).topk(k, dim=1)
        parent, token = index // cand.size(2), index % cand.size(2)
        ids = ids.view(a, k, -1).gather(1, parent[:, :, None].expand(-1, -1, ids.size(1)))
        ids[:, :, n] = token
        live = top
        at_limit = limit == n
        if n in (limits[i] for i in active):
            cut = torch.full((a, k, width), PAD, device=device)
            cut[:, :, :n] = ids[:, :, 1 : n + 1]
            new_scores.append(torch.where(at_limit[:, None], top / lp, -math.inf))
            new_ids.append(cut)
        ids = ids.view(a * k, -1)
        fin_scores, pick = torch.cat(new_scores, 1).topk(k, dim=1)
        fin_ids = torch.cat(new_ids, 1).gather(1, pick[:, :, None].expand(-1, -1, width))
        done = (at_limit | (fin_scores[:, 0] >= live[:, 0] / bound_lp)).tolist()
        if not any(done):
            continue
        rows = torch.tensor([active[i] for i, d in enumerate(done) if d], device=device)
        ended_here = torch.tensor([i for i, d in enumerate(done) if d], device=device)
        out_ids[rows], out_scores[rows] = fin_ids[ended_here], fin_scores[ended_here]
        if all(done):
            break
        keep = [i for i, d in enumerate(done) if not d]
        active = [active[i] for i in keep]
        keep_t = torch.tensor(keep, device=device)
        rows_k = (keep_t[:, None] * k + torch.arange(k, device=device)).reshape(-1)
        limit, bound_lp = limit[keep_t], bound_lp[keep_t]
        live, fin_ids, fin_scores = live[keep_t], fin_ids[keep_t], fin_scores[keep_t]
        memory, src, ids = memory[rows_k], src[rows_k], ids[rows_k]
    return out_ids, out_scores


def words_of(ids: list[int], words: list[str]) -> str:
    """A sentence's words up to its EOS, BPE pieces joined (what BLEU compares)."""
    out = []
    for i in ids:
        if i == EOS:
            break
        if i != PAD:
            out.append(words[i])
    return " ".join(out).replace("@@ ", "")
