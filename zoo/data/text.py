"""Word-level tokenizer over a fixed vocabulary, for the small captioned datasets.

No files, no downloads: a vocabulary is a tuple of words. Id 0 is padding, id 1 stands for
any word outside the vocabulary, and ids 2.. are the words in the order given.

    tokenizer = shapes_tokenizer()
    tokens = tokenizer.encode(["a red circle at the top left"], SHAPES_MAX_LEN)  # [1, 7] int32
    tokenizer.decode(tokens)  # ["a red circle at the top left"]

`SHAPES_TOKENIZER` and `SHAPES_MAX_LEN` are defined by `zoo.data.shapes` (it owns the caption
grammar and imports this module to encode its captions); they are re-exported here lazily, so
that this module never imports a dataset at import time.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

import numpy as np

PAD = 0
UNKNOWN = 1
_FIRST_WORD = 2
UNKNOWN_WORD = "<unk>"
# Maps every ASCII punctuation character to nothing: "left." and "left" are one word.
_STRIP_PUNCTUATION = str.maketrans("", "", string.punctuation)


def words_of(text: str) -> list[str]:
    """The words of `text`: lowercased, split on whitespace, punctuation removed, none empty."""
    words = (w.translate(_STRIP_PUNCTUATION) for w in str(text).lower().split())
    return [w for w in words if w]


class WordTokenizer:
    """Captions <-> `[B, L] int32` ids over a fixed vocabulary.

    Args:
      words: the vocabulary, distinct non-empty lowercase words without whitespace or
        punctuation (anything else could never be produced by `words_of`); word k gets id k + 2.

    Attributes:
      words: the vocabulary as a tuple.
      vocab_size: len(words) + 2 (padding and unknown included): the size an embedding needs.
    """

    def __init__(self, words: Sequence[str]):
        words = tuple(words)
        for word in words:
            if not isinstance(word, str) or words_of(word) != [word]:
                raise ValueError(
                    f"vocabulary words must be non-empty lowercase strings without whitespace "
                    f"or punctuation; got {word!r}"
                )
        if len(set(words)) != len(words):
            repeated = sorted({w for w in words if words.count(w) > 1})
            raise ValueError(f"vocabulary words must be distinct; repeated: {repeated}")
        self.words = words
        self.vocab_size = len(words) + _FIRST_WORD
        self._ids = {w: i + _FIRST_WORD for i, w in enumerate(words)}

    def encode(self, captions: Sequence[str], max_len: int) -> np.ndarray:
        """`captions` (B strings) -> ids `[B, max_len]` int32.

        Words beyond `max_len` are dropped; shorter captions are padded with 0 on the right;
        words outside the vocabulary become 1.
        """
        if isinstance(captions, str):
            raise ValueError("captions must be a sequence of strings, not one string")
        if not isinstance(max_len, int | np.integer) or max_len < 1:
            raise ValueError(f"max_len must be a positive int; got {max_len!r}")
        ids = np.zeros((len(captions), int(max_len)), np.int32)
        for row, text in enumerate(captions):
            encoded = [self._ids.get(w, UNKNOWN) for w in words_of(text)[:max_len]]
            ids[row, : len(encoded)] = encoded
        return ids

    def decode(self, ids) -> list[str]:
        """ids `[B, L]` (or one row `[L]`) -> B captions; padding is skipped, unknown -> '<unk>'."""
        ids = np.asarray(ids)
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"ids must be an integer array [B, L]; got {ids.dtype} {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(
                f"ids must lie in [0, {self.vocab_size}); got {ids.min()}..{ids.max()}"
            )
        table = ("", UNKNOWN_WORD, *self.words)
        return [" ".join(table[i] for i in row if i != PAD) for row in ids.tolist()]

    def __repr__(self) -> str:
        return f"WordTokenizer(vocab_size={self.vocab_size})"


def shapes_tokenizer() -> WordTokenizer:
    """The tokenizer of the `shapes` captions (the same object as `SHAPES_TOKENIZER`)."""
    from zoo.data import shapes  # shapes imports this module: import it on use, not at load

    return shapes.SHAPES_TOKENIZER


def __getattr__(name: str):
    # PEP 562: `from zoo.data.text import SHAPES_TOKENIZER` resolves here, after shapes loaded.
    if name in ("SHAPES_TOKENIZER", "SHAPES_MAX_LEN"):
        from zoo.data import shapes

        return getattr(shapes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
