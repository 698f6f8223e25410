"""Configuration is data: dataclasses filled from YAML presets (`asru/configs/*.yaml`) or a user's YAML file."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from asru.errors import UserError

PRESET_DIR = Path(__file__).parent / "configs"
T = TypeVar("T")


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path: str) -> dict[str, Any]:
    """A preset by name (`tiny`, `qwen3vl-8b`, ...) or a path to a YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise UserError(f"unknown config preset '{name_or_path}'; choose one of {', '.join(preset_names())} or pass a YAML file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"config {path} is not valid YAML: {err}".splitlines()[0]) from err
    if not isinstance(data, dict):
        raise UserError(f"config {path} must be a mapping of sections, got {type(data).__name__}")
    return data


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "config") -> T:
    """Build dataclass `cls` from `data`, recursing into nested dataclasses; unknown keys are an error."""
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        valid = ", ".join(fields) if len(fields) <= 40 else f"the fields of {cls.__name__} (see its documentation)"
        raise UserError(f"{where}: unknown option(s) {', '.join(unknown)}; valid options: {valid}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind) and isinstance(value, dict):
            value = from_dict(kind, value, f"{where}.{name}")
        elif kind is float and isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise UserError(f"{where}.{name} must be a number, got '{value}'") from None
        values[name] = value
    return cls(**values)


def section(preset: dict[str, Any], name: str, cls: type[T], overrides: dict[str, Any] | None = None) -> T:
    merged = {**(preset.get(name) or {}), **(overrides or {})}
    return from_dict(cls, merged, where=name)


def apply_threads(preset: dict[str, Any]) -> int | None:
    """Set torch's intra-op thread count from the preset's `threads` and return it (None when unset).

    CPU reductions are split by thread, so the same run on 1 and 2 threads gives different weights; a preset that
    fixes the count makes a fresh clone rebuild bit-identical models on any machine. Without `threads` (the
    real-model presets, which run on GPUs) torch's own choice is kept and None is returned, so the configs that
    record it do not depend on the core count of the machine that ran them (reuse, --resume, check_oracle).
    """
    import torch

    threads = preset.get("threads")
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise UserError(f"preset option threads must be a positive integer, got {threads!r}; "
                            "set e.g. `threads: 2` in the preset")
        torch.set_num_threads(threads)
    return threads


def to_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


ACCELERATE_DIR = PRESET_DIR / "accelerate"


def accelerate_config(name_or_path: str):
    """An accelerate launch config (`ddp`, `zero2`, `zero3`, `fsdp`, `cpu` or a YAML path) as accelerate reads it
    (`ClusterConfig`); a missing or unparsable file is one line."""
    from accelerate.commands.config.config_args import load_config_from_file

    path = Path(name_or_path)
    if not path.suffix:
        path = ACCELERATE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in ACCELERATE_DIR.glob("*.yaml")))
        raise UserError(f"accelerate config {path} does not exist; use one of {known} or a YAML file")
    try:
        return load_config_from_file(str(path))
    except (yaml.YAMLError, TypeError, ValueError, KeyError) as err:
        raise UserError(f"accelerate config {path} does not parse: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
