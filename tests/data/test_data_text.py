"""The word tokenizer, and the shapes vocabulary and `tokens` batches built on it."""

import numpy as np
import pytest

from zoo.data import shapes
from zoo.data.text import SHAPES_MAX_LEN, SHAPES_TOKENIZER, WordTokenizer, shapes_tokenizer


def test_encode_lowercases_strips_punctuation_truncates_and_pads():
    tok = WordTokenizer(["red", "circle", "top"])
    assert tok.vocab_size == 5
    ids = tok.encode(["Red, CIRCLE!", "  red  blue\ttop.", "top red circle red top"], max_len=4)
    assert ids.dtype == np.int32 and ids.shape == (3, 4)
    np.testing.assert_array_equal(ids, [[2, 3, 0, 0], [2, 1, 4, 0], [4, 2, 3, 2]])
    assert tok.decode(ids) == ["red circle", "red <unk> top", "top red circle red"]
    assert tok.decode(ids[0]) == ["red circle"]
    assert tok.encode([], 3).shape == (0, 3)


@pytest.mark.parametrize(
    "words, match",
    [(["red", "red"], "distinct"), (["Red"], "lowercase"), (["top left"], "whitespace"),
     (["a."], "punctuation"), ([""], "non-empty")],
)  # fmt: skip
def test_bad_vocabulary_is_an_error(words, match):
    with pytest.raises(ValueError, match=match):
        WordTokenizer(words)


def test_bad_encode_and_decode_arguments_are_errors():
    tok = WordTokenizer(["red"])
    with pytest.raises(ValueError, match="max_len"):
        tok.encode(["red"], 0)
    with pytest.raises(ValueError, match="not one string"):
        tok.encode("red", 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        tok.decode([[3]])
    with pytest.raises(ValueError, match="integer"):
        tok.decode(np.zeros((1, 2), np.float32))


def test_shapes_tokenizer_round_trips_every_caption():
    assert shapes_tokenizer() is SHAPES_TOKENIZER
    captions = [shapes.caption(*shapes.attributes_of(label)) for label in range(shapes.NUM_CLASSES)]
    assert SHAPES_MAX_LEN == max(len(c.split()) for c in captions)
    assert SHAPES_MAX_LEN == 7  # "a red circle at the top left"
    ids = SHAPES_TOKENIZER.encode(captions, SHAPES_MAX_LEN)
    assert (ids != 1).all()  # no unknown words
    assert SHAPES_TOKENIZER.decode(ids) == captions
    assert len({tuple(row) for row in ids}) == shapes.NUM_CLASSES  # distinct captions, distinct ids
    assert SHAPES_TOKENIZER.vocab_size == len(shapes.VOCABULARY) + 2 == 19


def test_shapes_batches_carry_tokens():
    examples = shapes.ShapesExamples(8, image_size=8, channels=3, seed=0, train=True)
    assert examples.element_spec["tokens"] == ((SHAPES_MAX_LEN,), np.dtype(np.int32))
    batch = examples.load(np.arange(5))
    assert batch["tokens"].shape == (5, SHAPES_MAX_LEN) and batch["tokens"].dtype == np.int32
    assert SHAPES_TOKENIZER.decode(batch["tokens"]) == list(batch["caption"])
