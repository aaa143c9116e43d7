"""A tokenised parallel corpus as ``lookbench.tasks.wmt`` reads it: one joint vocabulary (built,
or a fairseq dictionary), pairs longer than the model's positions left out, token-budget
batches of similar length (without torch; the model, ``lookbench.tasks.transformer``, and the
task both read it)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lookbench.tasks.base import DataUnavailable

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
MAX_LEN = 256  # the model's positions: tokens per sentence (with EOS); longer pairs are left out


@dataclass(frozen=True)
class Parallel:
    """A tokenised parallel corpus: (source ids, target ids) per split, and the vocabulary."""

    train: list[tuple[list[int], list[int]]]
    valid: list[tuple[list[int], list[int]]]
    test: list[tuple[list[int], list[int]]]
    words: list[str]
    # per split: (pairs left out for a side longer than MAX_LEN, pairs in the files)
    too_long: dict[str, tuple[int, int]] = field(default_factory=dict)


_CACHE: dict[tuple, Parallel] = {}


def _find(path: Path) -> None:
    if not path.is_file():
        raise DataUnavailable(f"{path} is missing: expected tokenised, BPE-applied "
                              f"train/valid/test.<src> and .<tgt> files in {path.parent}")


def find_parallel(root: Path | None, src: str, tgt: str, dict_file: str | None = None
                  ) -> Path:
    """The corpus's folder; :class:`DataUnavailable` if one of its files is missing."""
    if root is None:
        raise DataUnavailable("wmt14 reads train/valid/test.<src>/<tgt> from --data-dir")
    root = Path(root).expanduser().resolve()
    for split in ("train", "valid", "test"):
        for lang in (src, tgt):
            _find(root / f"{split}.{lang}")
    if dict_file is not None and not Path(dict_file).is_file():
        raise DataUnavailable(f"dictionary {dict_file} is missing (fairseq's format: one "
                              f"'word count' per line)")
    return root


def _read_lines(path: Path) -> list[list[str]]:
    _find(path)
    return [line.split() for line in path.read_text(encoding="utf-8", errors="replace")
            .splitlines()]


def _vocabulary(dict_file: Path | None, train: list[list[str]]) -> list[str]:
    if dict_file is not None:
        if not dict_file.is_file():
            raise DataUnavailable(f"dictionary {dict_file} is missing (fairseq's format: one "
                                  f"'word count' per line)")
        words = [line.split()[0] for line in dict_file.read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    else:
        counts = Counter(w for line in train for w in line)
        words = sorted(counts, key=lambda w: (-counts[w], w))
    return SPECIALS + [w for w in words if w not in SPECIALS]


def load_parallel(root: Path | None, src: str, tgt: str, dict_file: str | None = None
                  ) -> Parallel:
    """The corpus under ``root``, numbered by one joint vocabulary; cached per process."""
    if root is None:
        raise DataUnavailable("wmt14 reads train/valid/test.<src>/<tgt> from --data-dir")
    root = Path(root).expanduser().resolve()
    key = (root, src, tgt, dict_file)
    if key in _CACHE:
        return _CACHE[key]
    lines = {(split, lang): _read_lines(root / f"{split}.{lang}")
             for split in ("train", "valid", "test") for lang in (src, tgt)}
    for split in ("train", "valid", "test"):
        if len(lines[split, src]) != len(lines[split, tgt]):
            raise DataUnavailable(f"{root}/{split}.{src} and {split}.{tgt} have different "
                                  f"numbers of lines")
    words = _vocabulary(Path(dict_file) if dict_file else None,
                        lines["train", src] + lines["train", tgt])
    index = {w: i for i, w in enumerate(words)}

    def ids(tokens: list[str]) -> list[int]:
        return [index.get(w, UNK) for w in tokens] + [EOS]

    splits: dict[str, list[tuple[list[int], list[int]]]] = {}
    too_long: dict[str, tuple[int, int]] = {}
    for split in ("train", "valid", "test"):
        pairs = [(ids(a), ids(b)) for a, b in zip(lines[split, src], lines[split, tgt])
                 if a and b]
        # Left out rather than cut: a cut target loses its EOS and is scored as a prefix, and
        # a cut source's translation would be scored against the whole reference.
        splits[split] = [p for p in pairs if len(p[0]) <= MAX_LEN and len(p[1]) <= MAX_LEN]
        if len(splits[split]) < len(pairs):
            too_long[split] = (len(pairs) - len(splits[split]), len(pairs))
    _CACHE[key] = Parallel(splits["train"], splits["valid"], splits["test"], words, too_long)
    return _CACHE[key]


def too_long_lines(corpus: Parallel, src: str, tgt: str) -> list[str]:
    """One line per split that lost pairs to ``MAX_LEN``: how many, and what they are left
    out of (a test set's BLEU is then not the whole test set's)."""
    what = {"train": "training", "valid": "validation perplexity",
            "test": "test perplexity and BLEU"}
    return [f"wmt14: {n} of {total} pairs in {split}.{src}/{split}.{tgt} have a side longer "
            f"than {MAX_LEN} tokens (the model's positions) and are left out of {what[split]}"
            for split, (n, total) in corpus.too_long.items()]


def token_batches(pairs: list[tuple[list[int], list[int]]], max_tokens: int
                  ) -> list[list[int]]:
    """Indices of ``pairs`` grouped into batches of similar length, each padded to at most
    ``max_tokens`` source or target tokens (a sentence longer than that is alone)."""
    order = sorted(range(len(pairs)), key=lambda i: (len(pairs[i][0]), len(pairs[i][1]), i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        length = max(len(pairs[i][0]), len(pairs[i][1]) + 1)
        if current and max(longest, length) * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, length)
    if current:
        batches.append(current)
    return batches
