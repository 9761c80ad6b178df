"""Scenes of the built-in world: coloured shapes and written words on a 3x3 grid.

A scene is pure data (seeded, deterministic); :func:`render` draws it. Objects sit in grid cells
whose edges fall on patch boundaries of the tiny preset (96 px, patch 32: a cell is one patch),
which keeps the vision problem learnable in minutes on a CPU while still asking for colour, shape,
size, count, position, binding and OCR-style reading.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

GRID = 3
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 60),
    "blue": (40, 70, 220),
    "yellow": (230, 200, 20),
    "purple": (140, 50, 170),
    "orange": (245, 130, 20),
}
SHAPES = ["circle", "square", "triangle", "diamond"]
SIZES = ["big", "small"]
WORDS = ["cat", "dog", "sun", "car", "box", "hat", "cup", "pen", "bus", "map", "key", "fox", "egg", "bed", "toy", "jam"]
POSITIONS = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]
BACKGROUND = (238, 238, 238)
WORD_COLOUR = (20, 20, 20)


@dataclass(frozen=True)
class Shape:
    cell: int
    colour: str
    shape: str
    size: str

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def position(self) -> str:
        return POSITIONS[self.cell]


@dataclass(frozen=True)
class Word:
    cell: int
    text: str

    @property
    def position(self) -> str:
        return POSITIONS[self.cell]


@dataclass
class Scene:
    id: str
    shapes: list[Shape] = field(default_factory=list)
    word: Word | None = None

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "shapes": [asdict(s) for s in self.shapes],
            "word": asdict(self.word) if self.word else None,
        }

    @classmethod
    def from_json(cls, obj: dict) -> Scene:
        word = Word(**obj["word"]) if obj.get("word") else None
        return cls(id=obj["id"], shapes=[Shape(**s) for s in obj["shapes"]], word=word)

    def shapes_in_reading_order(self) -> list[Shape]:
        return sorted(self.shapes, key=lambda s: s.cell)


def sample_scene(rng: random.Random, scene_id: str, word_fraction: float = 0.35) -> Scene:
    """1-4 shapes in distinct cells, plus a written word in ``word_fraction`` of the scenes."""
    n_shapes = rng.randint(1, 4)
    has_word = rng.random() < word_fraction
    cells = rng.sample(range(GRID * GRID), n_shapes + int(has_word))
    shapes = [
        Shape(cell=c, colour=rng.choice(list(COLOURS)), shape=rng.choice(SHAPES), size=rng.choice(SIZES))
        for c in cells[:n_shapes]
    ]
    word = Word(cell=cells[-1], text=rng.choice(WORDS)) if has_word else None
    return Scene(id=scene_id, shapes=shapes, word=word)


@lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=14)


def _cell_box(cell: int, image_size: int) -> tuple[float, float, float]:
    """Centre x, centre y and side length of a grid cell."""
    side = image_size / GRID
    row, col = divmod(cell, GRID)
    return (col + 0.5) * side, (row + 0.5) * side, side


def render(scene: Scene, image_size: int = 96) -> Image.Image:
    """Draw a scene; the same scene always gives the same pixels."""
    img = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for s in scene.shapes:
        cx, cy, side = _cell_box(s.cell, image_size)
        r = side * (0.42 if s.size == "big" else 0.22)
        fill = COLOURS[s.colour]
        if s.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif s.shape == "square":
            q = r * 0.88
            draw.rectangle([cx - q, cy - q, cx + q, cy + q], fill=fill)
        elif s.shape == "triangle":
            draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.85), (cx - r, cy + r * 0.85)], fill=fill)
        elif s.shape == "diamond":
            draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    if scene.word is not None:
        cx, cy, _ = _cell_box(scene.word.cell, image_size)
        draw.text((cx, cy), scene.word.text, fill=WORD_COLOUR, font=_font(), anchor="mm")
    return img
