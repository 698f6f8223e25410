"""Augmented copies of training images: seeded, same size, different pixels, text-only examples untouched."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from asru.data.augment import augment_png, with_augmented_copies
from asru.data.world.faces import Face, png_bytes, render
from asru.errors import UserError
from asru.models.vanilla import VanillaConfig

FACE = Face(face_shape="round", skin=2, hair_style="short", hair_colour="black", eye_colour="blue", glasses=False,
            background="teal", shirt_colour="red")


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def test_an_augmented_copy_is_the_same_size_and_differs_from_the_original():
    original = png_bytes(render(FACE))
    copy = augment_png(original, np.random.default_rng(0))
    assert _pixels(copy).shape == _pixels(original).shape
    assert np.abs(_pixels(copy) - _pixels(original)).mean() > 1.0
    assert augment_png(original, np.random.default_rng(0)) == copy  # seeded: the same copy every time


def test_copies_are_added_only_for_examples_with_an_image():
    image = png_bytes(render(FACE))
    examples = [("q1", image, "a1"), ("q2", None, "a2")]
    out = with_augmented_copies(examples, 3, seed=0)
    assert out[:2] == examples and len(out) == 5
    assert all(text == "q1" and answer == "a1" and img != image for text, img, answer in out[2:])
    assert with_augmented_copies(examples, 0, seed=0) == examples


@pytest.mark.parametrize("bad", [{"augment": -1}, {"augment": 1.5}, {"replay": -0.1}])
def test_a_bad_vanilla_recipe_value_is_one_clear_error(bad):
    with pytest.raises(UserError, match="vanilla\\."):
        VanillaConfig(**bad)
