"""`shapes`: procedural coloured shapes with captions, small enough for small models to learn.

Example i of a split is drawn on demand from (dataset_seed, split, i): one of 3 SHAPES, in one
of 6 COLORS, centred on one of a 3x3 grid of POSITIONS, on a black background, with a small
jitter of size and offset so no two images are identical. The caption names the attributes,
e.g. "a red circle at the top left". Drawing happens at 4x the target size and is shrunk by the
shared (area-aware bicubic) resize, which anti-aliases the edges. Native channels: 3.

Sizes: `data.num_train` (default 10000) and `data.num_eval` (default 1000); the two splits come
from different random streams. Batches carry `caption` (`[B]` object array of str), the int32
attribute indices `shape`, `color`, `position`, `label`, the index of the attribute triple
(see `label_of`), for class-conditional models, and `tokens` (`[B, SHAPES_MAX_LEN]` int32, the
caption encoded by `SHAPES_TOKENIZER`, a `zoo.data.text.WordTokenizer` over `VOCABULARY`; 0 is
padding) for text-conditional ones. Mirroring would turn "left" into "right", so `random_flip`
is refused.
"""

import numpy as np
from PIL import Image, ImageDraw

from zoo.data import options
from zoo.data.preprocess import prepare_image
from zoo.data.text import WordTokenizer, words_of

SHAPES = ("circle", "square", "triangle")
COLORS = ("red", "green", "blue", "yellow", "purple", "white")
POSITIONS = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)  # fmt: skip
NUM_CLASSES = len(SHAPES) * len(COLORS) * len(POSITIONS)  # 162

RGB = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "purple": (160, 60, 220),
    "white": (240, 240, 240),
}

_SUPERSAMPLE = 4
_SPLIT_STREAMS = {True: 0, False: 1}  # train, eval


def caption(shape: int | str, color: int | str, position: int | str) -> str:
    """The caption of an attribute triple, given as indices or names: 'a red circle at the top'."""
    shape = SHAPES[shape] if isinstance(shape, int | np.integer) else shape
    color = COLORS[color] if isinstance(color, int | np.integer) else color
    position = POSITIONS[position] if isinstance(position, int | np.integer) else position
    return f"a {color} {shape} at the {position}"


def _vocabulary() -> tuple[tuple[str, ...], int]:
    """(every word of every caption, in order of first use; the longest caption in words)."""
    words, longest = {}, 0
    for s in range(len(SHAPES)):
        for c in range(len(COLORS)):
            for p in range(len(POSITIONS)):
                caption_words = words_of(caption(s, c, p))
                words.update(dict.fromkeys(caption_words))
                longest = max(longest, len(caption_words))
    return tuple(words), longest


VOCABULARY, SHAPES_MAX_LEN = _vocabulary()  # 17 words; 7 ("a red circle at the top left")
SHAPES_TOKENIZER = WordTokenizer(VOCABULARY)


def label_of(shape: int, color: int, position: int) -> int:
    """The class index in [0, NUM_CLASSES) of an attribute triple (row-major)."""
    return (shape * len(COLORS) + color) * len(POSITIONS) + position


def attributes_of(label: int) -> tuple[int, int, int]:
    """Inverse of `label_of`: (shape, color, position) indices."""
    rest, position = divmod(label, len(POSITIONS))
    shape, color = divmod(rest, len(COLORS))
    return shape, color, position


def caption_table() -> tuple[np.ndarray, np.ndarray]:
    """Every attribute triple, indexed by label, for text-conditioned samplers.

    Returns:
      tokens: ``[NUM_CLASSES, SHAPES_MAX_LEN]`` int32, each label's caption encoded by
        ``SHAPES_TOKENIZER``.
      attributes: ``[NUM_CLASSES, 3]`` int32 (shape, color, position) indices.
    """
    attributes = np.array([attributes_of(i) for i in range(NUM_CLASSES)], np.int32)
    captions = [caption(*map(int, a)) for a in attributes]
    return SHAPES_TOKENIZER.encode(captions, SHAPES_MAX_LEN), attributes


def draw(shape: int, color: int, position: int, size: int, rng: np.random.Generator) -> Image.Image:
    """Draw one shape on black at `size * 4` pixels (shrink it to anti-alias).

    The 3x3 grid cell sets the centre; `rng` jitters the centre by up to 8% of a cell and the
    radius between 30% and 40% of a cell, so shapes stay (almost) inside their cell.
    """
    canvas = size * _SUPERSAMPLE
    cell = canvas / 3
    row, col = divmod(position, 3)
    cx, cy = (
        (col + 0.5 + rng.uniform(-0.08, 0.08)) * cell,
        (row + 0.5 + rng.uniform(-0.08, 0.08)) * cell,
    )
    r = rng.uniform(0.30, 0.40) * cell
    image = Image.new("RGB", (canvas, canvas))
    pen = ImageDraw.Draw(image)
    fill = RGB[COLORS[color]]
    if SHAPES[shape] == "circle":
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif SHAPES[shape] == "square":
        half = r * 0.85  # same visual area as the circle, roughly
        pen.rectangle((cx - half, cy - half, cx + half, cy + half), fill=fill)
    else:  # equilateral triangle pointing up; a 10% larger circumradius evens out its area
        t = 1.1 * r
        pen.polygon(
            [(cx, cy - t), (cx - 0.866 * t, cy + 0.5 * t), (cx + 0.866 * t, cy + 0.5 * t)],
            fill=fill,
        )
    return image


class ShapesExamples:
    """One split of the shapes dataset as `Examples`; example i is generated from its index."""

    name = "shapes"
    num_classes = NUM_CLASSES

    def __init__(self, num_examples: int, image_size: int, channels: int, seed: int, train: bool):
        self.num_examples = num_examples
        self._size, self._channels = image_size, channels
        self._stream = [seed, _SPLIT_STREAMS[train]]
        self.element_spec = {
            "image": ((image_size, image_size, channels), np.dtype(np.float32)),
            "label": ((), np.dtype(np.int32)),
            "caption": ((), np.dtype(object)),
            "shape": ((), np.dtype(np.int32)),
            "color": ((), np.dtype(np.int32)),
            "position": ((), np.dtype(np.int32)),
            "tokens": ((SHAPES_MAX_LEN,), np.dtype(np.int32)),
        }

    def example(self, i: int) -> dict:
        """Example i: image `[S, S, C] float32 in [-1, 1]`, attribute indices and caption."""
        if not 0 <= i < self.num_examples:
            raise IndexError(f"shapes example {i} not in [0, {self.num_examples})")
        rng = np.random.default_rng([*self._stream, i])
        shape, color, position = (
            int(rng.integers(n)) for n in map(len, (SHAPES, COLORS, POSITIONS))
        )
        image = draw(shape, color, position, self._size, rng)
        return {
            "image": prepare_image(image, self._size, self._channels),
            "label": label_of(shape, color, position),
            "caption": caption(shape, color, position),
            "shape": shape,
            "color": color,
            "position": position,
        }

    def load(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        examples = [self.example(int(i)) for i in indices]
        batch = {"image": np.stack([e["image"] for e in examples])}
        for key in ("label", "shape", "color", "position"):
            batch[key] = np.array([e[key] for e in examples], np.int32)
        batch["caption"] = np.array([e["caption"] for e in examples], dtype=object)
        batch["tokens"] = SHAPES_TOKENIZER.encode(batch["caption"], SHAPES_MAX_LEN)
        return batch


def check(data_cfg) -> None:
    options.channels(data_cfg, native=3)
    options.positive_int(data_cfg, "num_train", 10000)
    options.positive_int(data_cfg, "num_eval", 1000)
    if options.random_flip(data_cfg):
        raise ValueError(
            "data.random_flip must be False for 'shapes': mirroring swaps left and right, "
            "which would contradict the caption and position"
        )


def open_split(data_cfg, train: bool) -> ShapesExamples:
    key, default = ("num_train", 10000) if train else ("num_eval", 1000)
    return ShapesExamples(
        num_examples=options.positive_int(data_cfg, key, default),
        image_size=options.image_size(data_cfg),
        channels=options.channels(data_cfg, native=3),
        seed=options.dataset_seed(data_cfg),
        train=train,
    )
