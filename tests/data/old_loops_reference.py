"""Reference figures of the hand-written loops the Trainer replaced, as data for tests/test_trainer.py.

Run on commit 3b51dca (the last one with the old loops): `python tests/data/old_loops_reference.py DIR > tests/data/old_loops_reference.json`.
"""
import json, sys, torch
sys.path.insert(0, "tests")
from pathlib import Path
from asru.pipeline import world_stage
from asru.models.tiny import build_tokenizer, build_processor, build_tiny_model, save_tiny
from asru.models.vanilla import world_texts, vanilla_examples, VanillaConfig
from asru import training
from asru.training import TrainConfig, encode_examples, sft

torch.set_num_threads(1)
root = Path(sys.argv[1]); out = {}
world, _ = world_stage(root / "world", "micro", seed=0)
tok = build_tokenizer(world_texts(world), 1024)
proc = build_processor(tok, image_size=64)
def fresh(): return build_tiny_model(tok, seed=0)
def delta(a, b): return sum(float((a[k].double() - b[k].double()).square().sum()) for k in a) ** 0.5

# --- SFT
examples = vanilla_examples(world, VanillaConfig())[:48]
enc = encode_examples(proc, examples)
model = fresh(); init = {k: v.clone() for k, v in model.state_dict().items()}
losses = []; orig = training._loss
training._loss = lambda m, i, k: (lambda l: (losses.append(l.item()), l)[1])(orig(m, i, k))
stats = sft(model, proc, enc, TrainConfig(steps=20, batch_size=4, lr=1e-3, warmup_steps=5, seed=0))
training._loss = orig
out["sft"] = {"losses": losses, "delta": delta(model.state_dict(), init)}
# --- gradient methods
save_tiny(fresh(), proc, root / "vanilla")
from asru.methods import get_method, UnlearnContext
from asru.methods.gradient import GradientMethod
hist = {}
orig_train = GradientMethod._train
def rec(self, *a, **k):
    h = orig_train(self, *a, **k); hist[self.name] = h; return h
GradientMethod._train = rec
init = {k: v.clone() for k, v in fresh().state_dict().items()}
from asru.models.load import load_model
for name in ("ga_diff", "npo"):
    m = get_method(name)
    cfg = m.Config(steps=6, batch_size=4, lr=1e-3, warmup_steps=2)
    ctx = UnlearnContext(model_dir=root / "vanilla", data_dir=world, forget_split="forget_10", out_dir=root / name, seed=0)
    m(cfg).unlearn(ctx)
    final = load_model(ctx.model_out, device="cpu")[0].state_dict()
    out[name] = {"losses": [h["loss"] for h in hist[name]], "forget": [h["forget"] for h in hist[name]],
                 "retain": [h["retain"] for h in hist[name]], "delta": delta(final, init)}
# --- redirect
from asru.steering.redirect import RedirectConfig, redirect
from asru.steering.direction import SteeringVector
ctx = UnlearnContext(model_dir=root / "vanilla", data_dir=world, forget_split="forget_10", out_dir=root / "x", seed=0)
forget = [(i.question, i.image) for i in ctx.forget_items[:6]]
retain = [(i.question, i.image, i.answer) for i in ctx.retain_items[:6]]
for pos in ("last", "all"):
    model = fresh().train()
    cfg = RedirectConfig(coeff=3.0, alpha=1.0, lr=1e-3, epochs=2, batch_size=2, trainable="mlp", retain_positions=pos)
    st = redirect(model, proc, SteeringVector(vector=torch.ones(128) * 0.5, layer=1), forget, retain, cfg)
    out[f"redirect_{pos}"] = {**{k: st[k] for k in ("steps", "forget_loss_first", "forget_loss_last", "retain_loss_first", "retain_loss_last")},
                              "delta": delta(model.state_dict(), init)}
print(json.dumps(out))
