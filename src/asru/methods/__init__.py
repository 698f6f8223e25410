"""The method registry: `asru unlearn NAME` looks the method up here. A new method = one file + one line below."""

from __future__ import annotations

from asru.errors import UserError
from asru.methods.base import Method, UnlearnContext

_MODULES = {
    "asru": "asru.methods.asru:ASRU",
    "asru_robust": "asru.methods.asru_robust:RobustASRU",
    "rule": "asru.methods.rule:RULE",
    "ga": "asru.methods.ga:GradientAscent",
    "ga_diff": "asru.methods.ga_diff:GradDiff",
    "kl_min": "asru.methods.kl_min:KLMin",
    "npo": "asru.methods.npo:NPO",
    "simnpo": "asru.methods.simnpo:SimNPO",
    "idk": "asru.methods.idk:IdkFineTune",
    "mmunlearner": "asru.methods.mmunlearner:MMUnlearner",
    "mllmeraser": "asru.methods.mllmeraser:MLLMEraser",
    "rmu": "asru.methods.rmu:RMU",
}


def method_names() -> list[str]:
    return sorted(_MODULES)


def get_method(name: str) -> type[Method]:
    """Import the method class lazily, so `asru --help` stays fast and optional dependencies stay optional."""
    if name not in _MODULES:
        raise UserError(f"unknown method '{name}'; known methods: {', '.join(method_names())}")
    module_name, class_name = _MODULES[name].split(":")
    from importlib import import_module

    return getattr(import_module(module_name), class_name)


__all__ = ["Method", "UnlearnContext", "get_method", "method_names"]
