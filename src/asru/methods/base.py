"""What every unlearning method shares: its inputs (vanilla model, forget/retain data) and its output contract.

A method turns the vanilla model directory into an unlearned model directory `<run>/model` (a plain
`save_pretrained` directory, loadable without this project) and returns stats for the run manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from asru.data.schema import QAItem
from asru.errors import UserError
from asru.manifest import Manifest

MODEL_SUBDIR = "model"


@dataclass
class UnlearnContext:
    """Everything a method may read; built once by the CLI/compare and handed to `Method.unlearn`."""

    model_dir: Path  # the vanilla model
    data_dir: Path
    forget_split: str
    out_dir: Path
    base_dir: Path | None = None  # the model before the profile fine-tune (ASRU's refusal side)
    seed: int = 0
    resume: bool = False
    retain_fraction: float = 1.0  # the retain budget: share of retain people methods may use (asru.data.budget)
    manifest: Manifest | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model_out(self) -> Path:
        return self.out_dir / MODEL_SUBDIR

    @cached_property
    def forget_items(self) -> list[QAItem]:
        from asru.data.mllmu import training_items

        items = training_items(self.data_dir, self.forget_split)
        if not items:
            raise UserError(f"forget split '{self.forget_split}' in {self.data_dir} has no training items; "
                            "pick a non-empty forget split")
        return items

    @cached_property
    def retain_budget(self):
        """The retain split's items under the retain budget (every method reads retain data through this)."""
        from asru.data.budget import retain_budget
        from asru.data.mllmu import check_disjoint, retain_split_for, training_items

        split = retain_split_for(self.forget_split)
        items = training_items(self.data_dir, split)
        check_disjoint({i.id for i in self.forget_items}, {i.id for i in items})
        return retain_budget(items, self.retain_fraction, self.seed, split)

    @property
    def retain_items(self) -> list[QAItem]:
        """The retain items this run may use: all of them, or the seeded subset of people of `retain_fraction`."""
        return self.retain_budget.items


class Method:
    """One unlearning method. Subclasses set `name`, `Config` (a dataclass) and implement `unlearn`."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    description: ClassVar[str] = ""
    uses_retain: ClassVar[bool] = True  # reads ctx.retain_items; False: a retain budget does not apply (GA)

    def __init__(self, config: Any) -> None:
        self.config = config

    def unlearn(self, ctx: UnlearnContext) -> dict[str, Any]:  # pragma: no cover - interface
        raise NotImplementedError
