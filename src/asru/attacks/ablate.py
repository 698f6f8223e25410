"""Direction ablation (Arditi et al. 2024; aimed at unlearned models by Łucki et al. 2024): a difference of mean
activations, per decoder layer at the last prompt token, projected out of that layer's output at every position.

Variants (each measured on the held-out forget facts):
- `vs_vanilla`: mean(this model on the forget prompts) - mean(the vanilla model on the same prompts): what the
  unlearning moved, whatever the method;
- `refusal`: mean(its refused prompts) - mean(its answered prompts), from its own greedy replies to the forget
  prompts (skipped - measured unablated - when it refuses all or none);
- `own_vector`: the steering direction the model ships (MLLMEraser's gated vector, ASRU's refusal vector) at
  every layer (skipped for a model without one);
- `random` (control): a random direction per layer, of the norm of that layer's `vs_vanilla` direction
  (projection only uses the direction; the norm is recorded).
A zero direction (the vanilla model against itself) ablates nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from asru.attacks.base import Attack, AttackEnv, Target
from asru.attacks.measure import gen_items, measure
from asru.eval.mllmu import prompt_for
from asru.models.generate import generate
from asru.refusal import is_refusal
from asru.steering.hooks import all_layers_last_hidden, project_out


@dataclass
class AblateConfig:
    min_side: int = 2  # prompts needed on each side of the refused/answered split


def directions_from(states_a: torch.Tensor, states_b: torch.Tensor) -> dict[int, torch.Tensor]:
    """{layer: mean(a) - mean(b)} from [layers, N, H] states."""
    diff = states_a.mean(1) - states_b.mean(1)
    return {layer: diff[layer] for layer in range(diff.shape[0])}


def random_like(directions: dict[int, torch.Tensor], seed: int) -> dict[int, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for layer, d in directions.items():
        r = torch.randn(d.shape, generator=gen)
        out[layer] = r / r.norm() * d.norm()
    return out


class Ablate(Attack):
    name = "ablate"
    description = "project difference-of-means directions (and the shipped steering vector) out of every layer"
    Config = AblateConfig
    controls = ("random",)

    def run(self, target: Target, env: AttackEnv, notes: list[str]) -> dict[str, dict]:
        gen = gen_items(env.held_out)
        prompts = [(prompt_for(i), i.image) for i in gen]
        bs = env.settings.batch_size
        vanilla_states = env.cache.get("vanilla_states")
        if vanilla_states is None:
            vanilla = Target(env.vanilla_dir, "vanilla")
            with vanilla.loaded() as (model, processor):
                vanilla_states = env.cache["vanilla_states"] = all_layers_last_hidden(model, processor, prompts, bs)
        out = {}
        with target.loaded() as (model, processor):
            states = all_layers_last_hidden(model, processor, prompts, bs)
            replies = generate(model, processor, prompts, max_new_tokens=env.settings.max_new_tokens, batch_size=bs)
            refused = torch.tensor([is_refusal(r) for r in replies])
            variants = {"vs_vanilla": directions_from(states, vanilla_states)}
            n_ref = int(refused.sum())
            if min(n_ref, len(refused) - n_ref) >= self.config.min_side:
                variants["refusal"] = directions_from(states[:, refused], states[:, ~refused])
            else:
                variants["refusal"] = {}
                notes.append(f"ablate/refusal on {target.role}: {n_ref} of {len(refused)} forget prompts refused, "
                             f"fewer than {self.config.min_side} on a side; measured unablated")
            own = target.own_vector()
            variants["own_vector"] = {} if own is None else {layer: own[1] for layer in range(states.shape[0])}
            variants["random"] = random_like(variants["vs_vanilla"], env.seed)
            for name, dirs in variants.items():
                with project_out(model, dirs):
                    out[name] = measure(model, processor, env.held_out, env.settings)
                norms = [float(d.norm()) for d in dirs.values()]
                out[name]["mean_direction_norm"] = sum(norms) / len(norms) if norms else 0.0
                out[name]["ablated"] = bool(norms) and max(norms) > 0
            out["refusal"]["refused_share"] = n_ref / max(1, len(refused))
        return out
