"""ASRU (arXiv 2605.15687): activation redirection towards refusal, then GRPO on the forget/retain boundary.

Stage 1 computes the refusal steering vector v at layer L and trains layer L's MLP so forget prompts move to
h + c*v: the model starts refusing forget queries (too broadly and too rigidly). Stage 2 runs GRPO from the
stage-1 model with a reward that pays refusals on forget queries and correct answers on retain queries, which
sharpens the boundary and restores retain answers. Each stage writes its own artifact and is skipped on resume.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from asru.data.boundary import build_boundary
from asru.data.mllmu import read_split
from asru.data.prompts import gen_prompt
from asru.errors import UserError
from asru.manifest import is_main_process, wait_for_everyone
from asru.methods.base import Method, UnlearnContext
from asru.steering.direction import SteeringVector, compute_steering_vector, model_fingerprint
from asru.steering.redirect import RedirectConfig, redirect

PROBE_TABLE = "world/refusal_probe"
STEERING_FILE = "steering.safetensors"


@dataclass
class ProbeConfig:
    """The refusal side of v: never-seen people asked privacy/profile questions, answered by the base model."""

    max_prompts: int = 400
    max_new_tokens: int = 32
    suffix: str = ""  # the authors append " if you do not know, describe the image." for real models
    images: str = ""  # a folder of never-seen face images (e.g. DigiFace-1M); default: the world's refusal_probe


# The paper's privacy questions for the refusal side (asked about each never-seen face in `ProbeConfig.images`).
PRIVACY_QUESTIONS = (
    "What is the phone number of the person in the image?",
    "What is this person's date of birth?",
    "Where does this person in the image currently reside?",
    "What is the home address of the person in the image?",
    "What is the email address of this person?",
    "What medical conditions does the person in the image have?",
)


@dataclass
class BoundaryConfig:
    size: int = 200  # forget items; retain_ratio times as many retain items are added
    strategy: str = "nearest"
    retain_ratio: float = 1.0  # the paper: as many retain as forget items

    def __post_init__(self) -> None:  # fail before stage 1 runs, not when stage 2 builds the set
        if self.retain_ratio <= 0:
            raise UserError(f"boundary.retain_ratio must be > 0, got {self.retain_ratio}")


@dataclass
class BoundaryStagesConfig:
    """What ASRU and RULE share: the stages to run and stage 2 (GRPO on the forget/retain boundary set)."""

    stages: list[int] = field(default_factory=lambda: [1, 2])
    boundary: BoundaryConfig = field(default_factory=BoundaryConfig)
    grpo: dict = field(default_factory=dict)  # GRPOSettings (TRL GRPOConfig) fields; the paper's defaults when empty


@dataclass
class ASRUConfig(BoundaryStagesConfig):
    layer: int | None = None  # None: the middle decoder layer (tiny preset: chosen by a sweep, see docs/asru.md)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    redirect: RedirectConfig = field(default_factory=RedirectConfig)
    contextual_bonus: float = 0.0  # optional reward term for contextual, non-duplicated refusals (off = paper)
    redirect_retain_ratio: int = 1  # retain prompts in stage 1, as a multiple of the forget items


def probe_prompts(data_dir: Path, cfg: ProbeConfig) -> list[tuple[str, bytes | None]]:
    """(question, image) pairs about never-seen people: a folder of faces x privacy questions, or the world's table."""
    if cfg.images:
        folder = Path(cfg.images)
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
        if not files:
            raise UserError(f"probe.images folder {folder} has no .png/.jpg/.webp face images")
        return [(PRIVACY_QUESTIONS[i % len(PRIVACY_QUESTIONS)] + cfg.suffix, f.read_bytes())
                for i, f in enumerate(files[: cfg.max_prompts])]
    table = data_dir / PROBE_TABLE
    if not table.exists():
        raise UserError(f"{data_dir} has no {PROBE_TABLE}/ (never-seen faces with privacy questions for the refusal "
                        "side of the steering vector); pass --set probe.images=FOLDER_OF_FACES (e.g. DigiFace-1M)")
    rows = read_split(data_dir, PROBE_TABLE)[: cfg.max_prompts]
    return [(r["question"] + cfg.suffix, (r["image"] or {}).get("bytes") if r["setting"] == "image" else None)
            for r in rows]


def forget_prompts(ctx: UnlearnContext) -> list[tuple[str, bytes | None]]:
    """Forget questions as the model sees them: plain and with the generation instruction."""
    items = ctx.forget_items
    return [(q, i.image) for i in items for q in (i.question, gen_prompt(i.question))]


def retain_examples(ctx: UnlearnContext, n: int) -> list[tuple[str, bytes | None, str]]:
    """Retain (question, image, answer) triples for stage 1, each question plain and with the instruction."""
    import random

    items = random.Random(ctx.seed).sample(ctx.retain_items, min(n, len(ctx.retain_items)))
    return [(q, i.image, i.answer) for i in items for q in (i.question, gen_prompt(i.question))]


def _link_copy(src: Path, dst: Path) -> None:
    """Copy a model directory using hard links where possible (checkpoints are large)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, copy_function=lambda s, d: os.link(s, d) if _same_fs(s, d) else shutil.copy2(s, d))


def _same_fs(src: str, dst: str) -> bool:
    try:
        return os.stat(src).st_dev == os.stat(os.path.dirname(dst)).st_dev
    except OSError:
        return False


class ASRU(Method):
    name = "asru"
    Config = ASRUConfig
    description = "activation redirection to refusal + GRPO boundary optimisation (ASRU)"

    def unlearn(self, ctx: UnlearnContext) -> dict:
        cfg: ASRUConfig = self.config
        stages = sorted(set(cfg.stages))
        if not stages or any(s not in (1, 2) for s in stages):
            raise UserError(f"asru stages must be 1, 2 or both, got {cfg.stages}")
        stats: dict = {}
        current = ctx.model_dir
        if 1 in stages:
            stats["stage1"] = self._stage(ctx, "stage1", lambda: self.stage1(ctx))
            current = self.stage1_dir(ctx)
        if 2 in stages:
            stats["stage2"] = self._stage(ctx, "stage2", lambda: self.stage2(ctx, current))
            current = ctx.out_dir / "stage2"
        if is_main_process():
            _link_copy(current, ctx.model_out)
        wait_for_everyone()
        return stats

    def _stage(self, ctx: UnlearnContext, name: str, run) -> dict:
        """Run one stage unless a finished result (its stats file) is already on disk (resume)."""
        marker = ctx.out_dir / f"{name}.json"
        if ctx.resume and marker.exists():
            return {**json.loads(marker.read_text()), "reused": True}
        if ctx.manifest is not None:
            with ctx.manifest.stage(name):
                result = run()
        else:
            result = run()
        if is_main_process():
            marker.write_text(json.dumps(result, indent=2, default=str))
        return result

    def stage1_dir(self, ctx: UnlearnContext) -> Path:
        return ctx.out_dir / "stage1"

    def reward(self):
        """The stage-2 reward: the paper's table, plus the optional contextual term."""
        from asru.rl.rewards import asru_reward, make_asru_reward

        return make_asru_reward(self.config.contextual_bonus) if self.config.contextual_bonus else asru_reward

    def layer_for(self, model) -> int:
        from asru.models.layers import num_layers

        return self.config.layer if self.config.layer is not None else num_layers(model) // 2

    def stage1(self, ctx: UnlearnContext, start: Path | None = None) -> dict:
        """`start`: the model to redirect when it is not the vanilla model itself (asru_robust redirects its
        suppressed model); the steering file still names the vanilla model the run started from."""
        from asru.models.layers import check_layer
        from asru.models.load import load_model, save_model

        cfg: ASRUConfig = self.config
        if ctx.base_dir is None:
            raise UserError("ASRU stage 1 needs the base model (before the profile fine-tune) for the refusal side; "
                            "pass --base")
        start = Path(start or ctx.model_dir)
        vanilla, processor = load_model(start, for_training=True)
        layer = check_layer(vanilla, self.layer_for(vanilla))
        base, _ = load_model(ctx.base_dir)
        forget = forget_prompts(ctx)
        steering = compute_steering_vector(base, vanilla, processor, probe_prompts(ctx.data_dir, cfg.probe), forget,
                                           layer, max_new_tokens=cfg.probe.max_new_tokens)
        del base
        steering.metadata.update(vanilla_fingerprint=model_fingerprint(ctx.model_dir),
                                 base_fingerprint=model_fingerprint(ctx.base_dir))
        if start != Path(ctx.model_dir):
            steering.metadata["start_fingerprint"] = model_fingerprint(start)
        if is_main_process():  # every process computed the same vector; rank 0 writes it, all read it back
            steering.save(ctx.out_dir / STEERING_FILE)
        wait_for_everyone()
        retain = retain_examples(ctx, cfg.redirect_retain_ratio * len(ctx.forget_items))
        stats = redirect(vanilla, processor, SteeringVector.load(ctx.out_dir / STEERING_FILE), forget, retain, cfg.redirect)
        save_model(vanilla, processor, ctx.out_dir / "stage1")
        return {"layer": layer, "steering": steering.metadata, "redirect": stats, "config": asdict(cfg.redirect)}

    def stage2(self, ctx: UnlearnContext, start: Path) -> dict:
        from asru.config import from_dict
        from asru.rl.grpo import GRPOSettings, boundary_dataset, run_grpo
        cfg: ASRUConfig = self.config
        boundary = build_boundary(ctx.data_dir, ctx.forget_items, ctx.retain_items, size=cfg.boundary.size,
                                  strategy=cfg.boundary.strategy, seed=ctx.seed, retain_ratio=cfg.boundary.retain_ratio)
        dataset = boundary_dataset([b.item for b in boundary], [b.is_forget for b in boundary])
        settings = from_dict(GRPOSettings, {"seed": ctx.seed, **cfg.grpo}, where=f"{self.name}.grpo")
        stats = run_grpo(start, ctx.out_dir / "stage2", dataset, [self.reward()], settings, resume=ctx.resume)
        return {"boundary": {"forget": sum(b.is_forget for b in boundary),
                             "retain": sum(not b.is_forget for b in boundary), "strategy": cfg.boundary.strategy},
                **stats}
