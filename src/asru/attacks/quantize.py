"""Quantization (Zhang et al., ICLR 2025: 4-bit brings back much of what GA/NPO-style unlearning removed, 8-bit
less): the weights are quantized and the model measured as usual (its saved steering applied).

- `int8`: dynamic int8 quantization of every nn.Linear on the CPU (torch.ao.quantization.quantize_dynamic);
- `nf4`, `bnb8`: bitsandbytes 4-bit NF4 / LLM.int8() through transformers' BitsAndBytesConfig, only where
  bitsandbytes is installed and a GPU is present. By default unavailable backends are skipped with one note;
  asked for by name (`--quant nf4`) they are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from asru.attacks.base import Attack, AttackEnv, Target
from asru.attacks.measure import measure
from asru.errors import UserError

KINDS = ("int8", "nf4", "bnb8")


def missing_backend(kind: str) -> str | None:
    """Why `kind` cannot run here (None when it can)."""
    if kind == "int8":
        engines = torch.backends.quantized.supported_engines
        return None if any(e in engines for e in ("fbgemm", "x86", "qnnpack", "onednn")) else \
            "this torch has no quantized CPU engine (fbgemm/x86/qnnpack)"
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return "bitsandbytes is not installed (pip install bitsandbytes)"
    if not torch.cuda.is_available():
        return "bitsandbytes quantization needs a CUDA GPU"
    return None


@dataclass
class QuantizeConfig:
    kinds: list[str] = field(default_factory=lambda: list(KINDS))
    explicit: bool = False  # kinds were named by the user: a missing backend is an error, not a skip


class Quantize(Attack):
    name = "quantize"
    description = "int8 (CPU) / NF4 / 8-bit (bitsandbytes) weights, then the normal measurement"
    Config = QuantizeConfig

    def check(self, env: AttackEnv) -> None:
        kinds = [self.config.kinds] if isinstance(self.config.kinds, str) else list(self.config.kinds)
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds:
            raise UserError(f"unknown quantization {', '.join(unknown) or '(none)'}; choose from {', '.join(KINDS)}")
        self.config.kinds = kinds
        if self.config.explicit:
            for kind in kinds:
                why = missing_backend(kind)
                if why:
                    raise UserError(f"--quant {kind} cannot run here: {why}; choose another of {', '.join(KINDS)}")

    def run(self, target: Target, env: AttackEnv, notes: list[str]) -> dict[str, dict]:
        out = {}
        for kind in self.config.kinds:
            why = missing_backend(kind)
            if why:
                note = f"quantize/{kind} skipped: {why}"
                if note not in notes:
                    notes.append(note)
                continue
            model, processor = self._load(target, kind)
            with target.steered(model):
                out[kind] = measure(model, processor, env.held_out, env.settings)
            del model
        return out

    @staticmethod
    def _load(target: Target, kind: str):
        if kind == "int8":
            import warnings

            model, processor = target.load(device="cpu")
            with warnings.catch_warnings():  # torch 2.9+ points eager quantization at torchao; the API still works
                warnings.simplefilter("ignore", (DeprecationWarning, UserWarning))
                return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8), processor
        from transformers import AutoModelForImageTextToText, BitsAndBytesConfig

        from asru.models.load import load_processor

        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16) \
            if kind == "nf4" else BitsAndBytesConfig(load_in_8bit=True)
        model = AutoModelForImageTextToText.from_pretrained(target.model_dir, quantization_config=quant, device_map="cuda")
        model.eval()
        return model, load_processor(target.model_dir)
