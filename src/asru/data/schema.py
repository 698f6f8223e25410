"""The one value every stage passes around: a question about a person, with its image and answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Task = Literal["mc", "gen", "cloze", "qa", "vqa", "refusal"]
Setting = Literal["image", "text"]


@dataclass(frozen=True)
class QAItem:
    """One evaluation or training example.

    `image` holds encoded image bytes (PNG/JPEG) as stored in the parquet struct, or None for pure-text items.
    `options` maps option letters to texts for multiple choice; `answer` is then the correct letter.
    `attribute` names the profile field a question is about (world data only; "" when unknown).
    """

    id: str
    question: str
    answer: str
    task: Task
    setting: Setting
    image: bytes | None = None
    options: dict[str, str] | None = None
    split: str = ""
    attribute: str = ""
    meta: dict = field(default_factory=dict, compare=False, hash=False)
