"""Image augmentation for the profile fine-tune: shifted, rescaled, relit and noisy copies of training images.

The Test_Set shows every person under harder views than the training images (MLLMU-Bench does the same with
other photos), so a model that memorised pixels fails it. Standard augmentation teaches the identity rather
than the picture. Copies are drawn once, seeded, before training, so a run stays deterministic and the image
processor (the slow part on a CPU) runs once per copy, not once per step.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F


def augment_png(image: bytes, rng: np.random.Generator, strength: float = 1.0) -> bytes:
    """One augmented copy of a PNG/JPEG image: translate up to 8 %, scale +-8 %, brightness +-20 %, pixel noise.
    The image is edge-padded before the affine and cropped back after, so no artificial border appears."""
    tensor = F.pil_to_tensor(Image.open(io.BytesIO(image)).convert("RGB"))
    height, width = tensor.shape[-2:]
    pad = max(height, width) // 4
    padded = F.pad(tensor, [pad], padding_mode="edge")
    shift = [float(rng.uniform(-0.08, 0.08) * strength * width), float(rng.uniform(-0.08, 0.08) * strength * height)]
    padded = F.affine(padded, angle=0.0, translate=shift, scale=float(1 + rng.uniform(-0.08, 0.08) * strength),
                      shear=[0.0, 0.0], interpolation=F.InterpolationMode.BILINEAR)
    tensor = F.center_crop(padded, [height, width])
    tensor = F.adjust_brightness(tensor, float(1 + rng.uniform(-0.2, 0.2) * strength))
    noise = torch.from_numpy(rng.normal(0, rng.uniform(0, 8) * strength, tensor.shape).astype(np.float32))
    tensor = (tensor.float() + noise).clamp(0, 255).to(torch.uint8)
    buffer = io.BytesIO()
    F.to_pil_image(tensor).save(buffer, format="PNG")
    return buffer.getvalue()


def with_augmented_copies(examples: list[tuple], copies: int, seed: int) -> list[tuple]:
    """`examples` plus `copies` augmented versions of each example that has an image (text-only ones unchanged)."""
    if copies <= 0:
        return list(examples)
    rng = np.random.default_rng(seed)
    extra = [(text, augment_png(image, rng), answer) for text, image, answer in examples if image is not None
             for _ in range(copies)]
    return list(examples) + extra
