"""Procedural portraits: an identity is a unique combination of drawn features; a view varies pose, scale, light, noise."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

COLOURS = {
    "red": (200, 40, 40), "blue": (40, 70, 200), "green": (40, 160, 60), "yellow": (230, 200, 40),
    "purple": (130, 50, 170), "orange": (240, 130, 30), "white": (235, 235, 235), "grey": (128, 128, 128),
    "black": (25, 25, 25), "brown": (110, 70, 35), "pink": (240, 150, 190), "teal": (30, 150, 150),
}
SKIN = [(250, 220, 190), (230, 190, 150), (200, 150, 110), (160, 110, 75), (110, 75, 50)]
FACE_SHAPES = ("round", "oval", "square")
HAIR_STYLES = ("short", "long", "bald", "bun")
HAIR_COLOURS = ("black", "brown", "yellow", "red", "white", "grey")
EYE_COLOURS = ("blue", "green", "brown", "black")
SHIRT_COLOURS = ("red", "blue", "green", "yellow", "purple", "orange")
BACKGROUNDS = ("white", "grey", "pink", "teal", "blue")

FEATURES = {
    "face_shape": FACE_SHAPES, "skin": tuple(range(len(SKIN))), "hair_style": HAIR_STYLES,
    "hair_colour": HAIR_COLOURS, "eye_colour": EYE_COLOURS, "glasses": (False, True),
    "shirt_colour": SHIRT_COLOURS, "background": BACKGROUNDS,
}


@dataclass(frozen=True)
class Face:
    face_shape: str
    skin: int
    hair_style: str
    hair_colour: str
    eye_colour: str
    glasses: bool
    shirt_colour: str
    background: str

    def vector(self) -> tuple:
        return tuple(getattr(self, name) for name in FEATURES)


@dataclass(frozen=True)
class View:
    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0
    light: float = 1.0
    noise: float = 0.0
    seed: int = 0


def sample_faces(rng: np.random.Generator, n: int, min_distance: int = 3) -> list[Face]:
    """Draw `n` faces that differ pairwise in at least `min_distance` features, so identities stay separable."""
    faces: list[Face] = []
    vectors: list[tuple] = []
    tries = 0
    while len(faces) < n:
        tries += 1
        if tries > 200 * n + 10_000:
            if min_distance <= 1:
                raise RuntimeError(f"cannot draw {n} distinct faces")
            min_distance -= 1  # the feature space is finite; relax rather than loop forever
            tries = 0
        values = {name: options[rng.integers(len(options))] for name, options in FEATURES.items()}
        face = Face(**{k: (bool(v) if k == "glasses" else int(v) if k == "skin" else str(v)) for k, v in values.items()})
        vec = face.vector()
        if all(sum(a != b for a, b in zip(vec, other)) >= min_distance for other in vectors):
            faces.append(face)
            vectors.append(vec)
    return faces


def random_view(rng: np.random.Generator, strength: float = 1.0) -> View:
    """A training (strength 1) or harder unseen (strength > 1) view of a face."""
    return View(
        dx=float(rng.uniform(-3, 3) * strength), dy=float(rng.uniform(-3, 3) * strength),
        scale=float(1 + rng.uniform(-0.06, 0.06) * strength), light=float(1 + rng.uniform(-0.15, 0.15) * strength),
        noise=float(rng.uniform(0, 6) * strength), seed=int(rng.integers(2**31)),
    )


def _draw(face: Face, size: int = 128) -> Image.Image:
    img = Image.new("RGB", (size, size), COLOURS[face.background])
    d = ImageDraw.Draw(img)
    s = size / 128
    box = lambda x0, y0, x1, y1: [x0 * s, y0 * s, x1 * s, y1 * s]  # noqa: E731
    skin = SKIN[face.skin]
    hair = COLOURS[face.hair_colour]
    d.ellipse(box(24, 100, 104, 160), fill=COLOURS[face.shirt_colour])  # shoulders
    d.rectangle(box(56, 84, 72, 104), fill=skin)  # neck
    if face.hair_style == "long":
        d.rectangle(box(30, 36, 98, 100), fill=hair)
    half_width = {"round": 34, "oval": 27, "square": 31}[face.face_shape]
    if face.face_shape == "square":
        d.rounded_rectangle(box(64 - half_width, 30, 64 + half_width, 94), radius=8 * s, fill=skin)
    else:
        d.ellipse(box(64 - half_width, 26 if face.face_shape == "oval" else 30, 64 + half_width, 96), fill=skin)
    if face.hair_style in ("short", "long", "bun"):
        d.chord(box(64 - half_width - 3, 20, 64 + half_width + 3, 64), 180, 360, fill=hair)
    if face.hair_style == "bun":
        d.ellipse(box(52, 6, 76, 28), fill=hair)
    eye = COLOURS[face.eye_colour]
    for cx in (50, 78):
        d.ellipse(box(cx - 6, 52, cx + 6, 62), fill=(255, 255, 255))
        d.ellipse(box(cx - 3, 54, cx + 3, 60), fill=eye)
        if face.glasses:
            d.rectangle(box(cx - 10, 48, cx + 10, 66), outline=(10, 10, 10), width=max(1, round(3 * s)))
    if face.glasses:
        d.line(box(60, 56, 68, 56), fill=(10, 10, 10), width=max(1, round(3 * s)))
    d.arc(box(52, 70, 76, 84), 20, 160, fill=(120, 30, 30), width=max(1, round(3 * s)))
    return img


def render(face: Face, view: View = View(), size: int = 64) -> Image.Image:
    """The portrait of `face` seen under `view`, as a `size`x`size` RGB image."""
    img = _draw(face, 128)
    img = img.transform(
        img.size, Image.AFFINE,
        (1 / view.scale, 0, 64 - 64 / view.scale - view.dx * 2, 0, 1 / view.scale, 64 - 64 / view.scale - view.dy * 2),
        resample=Image.BILINEAR, fillcolor=COLOURS[face.background],
    )
    img = ImageEnhance.Brightness(img).enhance(view.light).resize((size, size), Image.LANCZOS)
    if view.noise > 0:
        noise = np.random.default_rng(view.seed).normal(0, view.noise, (size, size, 3))
        img = Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8))
    return img


def png_bytes(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()
