"""The attack registry: `asru attack NAME` looks the attack up here. A new attack = one file + one line below.

Every attack sees a model directory (and the steering it ships), never how the model was unlearned, so a new
method is attacked for free (docs/robustness.md)."""

from __future__ import annotations

from asru.attacks.base import Attack, AttackEnv, Target
from asru.errors import UserError

_MODULES = {
    "relearn": "asru.attacks.relearn:Relearn",
    "relearn_retain": "asru.attacks.relearn:RelearnRetain",
    "ablate": "asru.attacks.ablate:Ablate",
    "prefill": "asru.attacks.prefill:Prefill",
    "sample": "asru.attacks.sample:Sample",
    "quantize": "asru.attacks.quantize:Quantize",
    "probe": "asru.attacks.probe:Probe",
}


def attack_names() -> list[str]:
    return list(_MODULES)


def get_attack(name: str) -> type[Attack]:
    if name not in _MODULES:
        raise UserError(f"unknown attack '{name}'; known attacks: {', '.join(attack_names())} (or all)")
    module_name, class_name = _MODULES[name].split(":")
    from importlib import import_module

    return getattr(import_module(module_name), class_name)


def expand_attacks(names) -> list[str]:
    """Attack names from the CLI (repeated and/or comma-separated; `all` = every one), checked, in registry order."""
    wanted = [n.strip() for name in names for n in str(name).split(",") if n.strip()]
    if not wanted:
        raise UserError(f"no attack named; known attacks: {', '.join(attack_names())} (or all)")
    if "all" in wanted:
        return attack_names()
    for name in wanted:
        get_attack(name)
    return [n for n in attack_names() if n in wanted]


__all__ = ["Attack", "AttackEnv", "Target", "attack_names", "expand_attacks", "get_attack"]
