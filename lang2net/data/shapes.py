"""ProceduralShapes: compositional shape x colour x pattern classes, rendered on the fly with vectorised SDF math."""

# axis legend: n images, h/w pixel rows/columns, c colour channels. Shape units: the shape spans about [-1, 1].

from __future__ import annotations

import itertools
import math

import numpy as np

from ..utils.checks import check_int

__all__ = ["ATTRIBUTES", "COLOURS", "PATTERNS", "SHAPES", "ProceduralShapes"]

SHAPES = ("circle", "square", "triangle", "cross", "star", "ring", "diamond", "hexagon")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.12, 0.10),
    "green": (0.12, 0.75, 0.22),
    "blue": (0.15, 0.32, 0.95),
    "yellow": (0.95, 0.88, 0.10),
    "purple": (0.58, 0.20, 0.80),
    "orange": (1.00, 0.55, 0.05),
    "white": (0.95, 0.95, 0.95),
}
PATTERNS = ("solid", "striped", "dotted", "outlined")
ATTRIBUTES: dict[str, tuple[str, ...]] = {"shape": SHAPES, "colour": tuple(COLOURS), "pattern": PATTERNS}

# words for the generated descriptions; every tuple has four entries and they rotate across paraphrases
_SHAPE_WORDS = {
    "circle": ("circle", "disc", "round disk", "circular shape"),
    "square": ("square", "box", "four-sided square", "square block"),
    "triangle": ("triangle", "three-cornered shape", "triangular shape", "pointed triangle"),
    "cross": ("cross", "plus sign", "plus-shaped cross", "cross with four equal arms"),
    "star": ("star", "five-pointed star", "star shape", "pointy star"),
    "ring": ("ring", "donut shape", "annulus", "thick loop"),
    "diamond": ("diamond", "rhombus", "diamond shape", "stretched lozenge"),
    "hexagon": ("hexagon", "six-sided shape", "hexagonal tile", "honeycomb cell"),
}
_COLOUR_WORDS = {
    "red": ("red", "crimson", "scarlet", "cherry-red"),
    "green": ("green", "emerald", "grass-green", "leafy green"),
    "blue": ("blue", "cobalt", "royal blue", "deep blue"),
    "yellow": ("yellow", "lemon-yellow", "golden", "canary yellow"),
    "purple": ("purple", "violet", "lilac", "deep purple"),
    "orange": ("orange", "tangerine", "amber", "bright orange"),
    "white": ("white", "snow-white", "chalk-white", "ivory"),
}
_PATTERN_ADJECTIVES = {
    "solid": ("solid", "filled", "plain", "fully coloured"),
    "striped": ("striped", "stripy", "banded", "pinstriped"),
    "dotted": ("dotted", "spotted", "polka-dot", "speckled"),
    "outlined": ("outlined", "hollow", "unfilled", "line-drawn"),
}
_PATTERN_PHRASES = {
    "solid": ("filled in completely", "with a flat, even fill", "with no pattern inside", "painted in one tone"),
    "striped": (
        "filled with stripes",
        "with parallel lines across it",
        "covered in diagonal bands",
        "crossed by thin stripes",
    ),
    "dotted": ("covered in dots", "with a grid of small spots", "sprinkled with round dots", "full of little circles"),
    "outlined": (
        "drawn only as an outline",
        "with just its border traced",
        "with an empty inside and a coloured edge",
        "shown as a thin contour",
    ),
}
_TEMPLATES = (
    "{a_c} {c} {p} {s}",
    "{p} {s} in {c}",
    "{a_c} {c} {s} {pw}",
    "{a_s} {s} {pw}, coloured {c}, on a dark background",
    "a picture of {a_s} {s} that is {c} and {p}",
)


# signed distances (negative inside), after Inigo Quilez's 2D distance functions


def _sd_box(u: np.ndarray, v: np.ndarray, bx: float, by: float) -> np.ndarray:
    qx, qy = np.abs(u) - bx, np.abs(v) - by
    return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)


def _sd_triangle(u: np.ndarray, v: np.ndarray, r: float = 0.85) -> np.ndarray:
    k = math.sqrt(3.0)
    x, y = np.abs(u) - r, v + r / k
    flip = x + k * y > 0
    x, y = np.where(flip, (x - k * y) / 2, x), np.where(flip, (-k * x - y) / 2, y)
    x = x - np.clip(x, -2 * r, 0)
    return -np.hypot(x, y) * np.sign(y)


def _sd_star(u: np.ndarray, v: np.ndarray, r: float = 1.0, inner: float = 0.45) -> np.ndarray:
    k1x, k1y = 0.809016994375, -0.587785252292
    x, y = np.abs(u), v
    for kx, ky in ((k1x, k1y), (-k1x, k1y)):  # fold the plane into one of the ten star sectors
        dot = 2 * np.maximum(kx * x + ky * y, 0)
        x, y = x - dot * kx, y - dot * ky
    x, y = np.abs(x), y - r
    bx, by = -inner * k1y, inner * k1x - 1
    h = np.clip((x * bx + y * by) / (bx * bx + by * by), 0, r)
    return np.hypot(x - bx * h, y - by * h) * np.sign(y * bx - x * by)


def _sd_hexagon(u: np.ndarray, v: np.ndarray, r: float = 0.8) -> np.ndarray:
    kx, ky, kz = -0.866025404, 0.5, 0.577350269
    x, y = np.abs(u), np.abs(v)
    dot = 2 * np.minimum(kx * x + ky * y, 0)
    x, y = x - dot * kx, y - dot * ky
    x, y = x - np.clip(x, -kz * r, kz * r), y - r
    return np.hypot(x, y) * np.sign(y)


def _sd_rhombus(u: np.ndarray, v: np.ndarray, bx: float = 0.95, by: float = 0.55) -> np.ndarray:
    x, y = np.abs(u), np.abs(v)
    h = np.clip(((bx - 2 * x) * bx - (by - 2 * y) * by) / (bx * bx + by * by), -1, 1)
    dist = np.hypot(x - 0.5 * bx * (1 - h), y - 0.5 * by * (1 + h))
    return dist * np.sign(x * by + y * bx - bx * by)


_SDF = {
    "circle": lambda u, v: np.hypot(u, v) - 0.9,
    "square": lambda u, v: _sd_box(u, v, 0.75, 0.75),
    "triangle": _sd_triangle,
    "cross": lambda u, v: np.minimum(_sd_box(u, v, 0.95, 0.3), _sd_box(u, v, 0.3, 0.95)),
    "star": _sd_star,
    "ring": lambda u, v: np.abs(np.hypot(u, v) - 0.65) - 0.27,
    "diamond": _sd_rhombus,
    "hexagon": _sd_hexagon,
}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" and not word.startswith(("uni", "one")) else "a"


# classes


class ProceduralShapes:
    """Compositional classes ``"<colour> <pattern> <shape>"`` (8 x 7 x 4 = 224) with generated descriptions.

    Each rendering draws one shape on a dark, noisy background with a random position, size, rotation, brightness
    and background level (the nuisance factors); the class fixes only shape, colour and pattern.

    Args:
        img_size: side of the rendered square images in pixels.
        seed: base seed; renderings are a function of ``(seed, class_index, render seed)`` and the paraphrase wording
            of ``seed``.

    Raises:
        ValueError: If ``img_size`` is below 8.
    """

    def __init__(self, img_size: int = 32, seed: int = 0) -> None:
        check_int("img_size", img_size, minimum=8)
        self.img_size = img_size
        self.seed = seed
        self._attributes = [
            {"shape": s, "colour": c, "pattern": p} for s, c, p in itertools.product(SHAPES, COLOURS, PATTERNS)
        ]
        self.class_names = [f"{a['colour']} {a['pattern']} {a['shape']}" for a in self._attributes]
        self._index = {name: i for i, name in enumerate(self.class_names)}
        rng = np.random.default_rng([seed, 7])
        self.descriptions = {
            name: self._describe(attrs, rng.integers(0, 4, size=3))
            for name, attrs in zip(self.class_names, self._attributes, strict=True)
        }

    def __repr__(self) -> str:
        return f"ProceduralShapes(img_size={self.img_size}, seed={self.seed}, classes={len(self.class_names)})"

    def __len__(self) -> int:
        return len(self.class_names)

    @staticmethod
    def _describe(attrs: dict[str, str], offsets: np.ndarray) -> list[str]:
        """Five paraphrases: each template takes the next synonym of shape, colour and pattern."""
        out = []
        for j, template in enumerate(_TEMPLATES):
            turn = j + 2 * (j // 4)  # the fifth template would repeat the first one's words; shift it by two
            s = _SHAPE_WORDS[attrs["shape"]][(turn + offsets[0]) % 4]
            c = _COLOUR_WORDS[attrs["colour"]][(turn + offsets[1]) % 4]
            p = _PATTERN_ADJECTIVES[attrs["pattern"]][(turn + offsets[2]) % 4]
            pw = _PATTERN_PHRASES[attrs["pattern"]][(turn + offsets[2]) % 4]
            out.append(template.format(s=s, c=c, p=p, pw=pw, a_c=_article(c), a_s=_article(s)))
        return out

    def index(self, class_name: str) -> int:
        """Class index of a name such as ``"red striped star"``.

        Raises:
            ValueError: If the name is not a class; the message gives the valid attribute values.
        """
        if class_name not in self._index:
            raise ValueError(
                f"{class_name!r} is not a ProceduralShapes class; names are '<colour> <pattern> <shape>' with "
                f"colour in {list(COLOURS)}, pattern in {list(PATTERNS)}, shape in {list(SHAPES)}"
            )
        return self._index[class_name]

    def attributes(self, class_name: str) -> dict[str, str]:
        """``{"shape": ..., "colour": ..., "pattern": ...}`` of a class name (raises ValueError if unknown)."""
        return dict(self._attributes[self.index(class_name)])

    def render(self, class_index: int, n: int, seed: int = 0) -> np.ndarray:
        """Render ``n`` images of one class.

        Args:
            class_index: index into :attr:`class_names`.
            n: number of images.
            seed: render seed; the same ``(class_index, n, seed)`` gives the same images.

        Returns:
            uint8 array ``(n, img_size, img_size, 3)``.

        Raises:
            ValueError: If ``class_index`` is out of range or ``n`` is negative.
        """
        if isinstance(class_index, bool) or not isinstance(class_index, (int, np.integer)):
            raise TypeError(f"class_index must be an int, got {type(class_index).__name__}")
        if not 0 <= class_index < len(self.class_names):
            raise ValueError(f"class_index {class_index} out of range 0..{len(self.class_names) - 1}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        attrs = self._attributes[class_index]
        rng = np.random.default_rng([self.seed, int(class_index), seed])
        size = self.img_size
        scale = rng.uniform(0.26, 0.42, n) * size  # (n,) shape radius in pixels: size is a nuisance factor
        slack = size / 2 - scale - 1  # keep the whole shape inside the frame
        centre = rng.uniform(-1, 1, (n, 2)) * slack[:, None]  # (n, 2) x, y offset from the image centre
        angle = rng.uniform(0, 2 * math.pi, n)
        colour = np.clip(np.asarray(COLOURS[attrs["colour"]]) * rng.uniform(0.8, 1.0, (n, 1)), 0, 1)  # (n, c)
        colour = np.clip(colour + rng.normal(0, 0.03, (n, 3)), 0, 1)
        background = rng.uniform(0.0, 0.3, n)  # (n,) grey level
        noise = rng.normal(0, 0.04, (n, size, size, 3)).astype(np.float32)

        grid = np.arange(size, dtype=np.float32) + 0.5 - size / 2
        x = grid[None, None, :] - centre[:, 0, None, None]  # (n, 1, w)
        y = grid[None, :, None] - centre[:, 1, None, None]  # (n, h, 1)
        cos, sin, inv = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None], 1 / scale[:, None, None]
        u, v = (cos * x + sin * y) * inv, (cos * y - sin * x) * inv  # (n, h, w) shape units, rotated frame
        dist = _SDF[attrs["shape"]](u, v) * scale[:, None, None]  # (n, h, w) signed distance in pixels
        coverage, tint = self._pattern(attrs["pattern"], u, v, dist, scale)
        paint = (coverage * tint)[..., None] * colour[:, None, None, :]  # (n, h, w, c)
        image = paint + (1 - coverage)[..., None] * background[:, None, None, None] + noise
        return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)

    @staticmethod
    def _pattern(
        pattern: str, u: np.ndarray, v: np.ndarray, dist: np.ndarray, scale: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Antialiased coverage of the painted area and the brightness of its pattern, both ``(n, h, w)``."""
        width = np.maximum(1.5, 0.12 * scale)[:, None, None]  # (n, 1, 1) edge width in pixels
        edge = np.clip(0.5 - (np.abs(dist) - width / 2), 0, 1)
        if pattern == "outlined":
            return edge, np.ones_like(edge)
        inside = np.clip(0.5 - dist, 0, 1)
        if pattern == "solid":
            return inside, np.ones_like(inside)
        if pattern == "striped":
            marks = np.mod((u + v) / 0.5, 1.0) < 0.5  # diagonal stripes in the shape's frame
        else:
            du, dv = np.mod(u / 0.55, 1.0) - 0.5, np.mod(v / 0.55, 1.0) - 0.5
            marks = np.hypot(du, dv) < 0.3  # a grid of dots, radius 0.17 shape units
        # unmarked interior is a dim tint of the colour and the rim stays bright, so the silhouette still reads
        return inside, np.maximum(np.where(marks, 1.0, 0.25), edge)
