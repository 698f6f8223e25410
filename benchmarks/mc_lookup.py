"""Why the tiny model's multiple-choice accuracy stays at chance: the option-lookup skill alone, measured.

    python benchmarks/mc_lookup.py --tokenizer runs/demo/base [--arch qwen3vl|qwen3|llama|gpt2] [--steps 2000]

Answering an MLLMU-Bench MC item needs "find the option that says X, output the letter written *before* it"
(prompt lines are "A: value"). This trains a freshly initialised small model of the chosen architecture on
nothing but that skill — "Which option says engineer?  A: violinist  B: carpenter  C: Hanoi  D: engineer" ->
"D", every value a single token of the world's vocabulary — and prints held-out accuracy every `--every`
steps, next to a control task of the same shape that copies option A's value (learnt in < 250 steps).
`--echo 0.5` replaces half of the training items with dense binding practice ("Repeat the options, each
followed by its letter" -> "A: violinist A\nB: carpenter B ..."): every answer line teaches carrying an
option's letter forward to its value, the half of the lookup circuit that one-letter answers barely train.
If lookup stays at chance for the steps base + vanilla can afford on 2 cores, MC accuracy of the tiny world
measures nothing and the unlearning comparison must lean on generation, cloze and refusal metrics.
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from transformers import AutoProcessor

from asru import training as T
from asru.data.prompts import mc_prompt
from asru.data.world import people as P
from asru.models.batch import IGNORE_INDEX
from asru.models.tiny import TinyConfig, build_tiny_model


def make_model(arch: str, tokenizer, layers: int, hidden: int, heads: int):
    """A randomly initialised causal LM of ~1-1.5 M parameters; qwen3vl is the project's tiny model itself."""
    if arch == "qwen3vl":
        return build_tiny_model(tokenizer, TinyConfig(num_layers=layers, hidden_size=hidden, num_heads=heads))
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    vocab = len(tokenizer)
    if arch == "gpt2":  # learned absolute positions: the letter is recoverable from position alone here
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=256))
    common = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  num_key_value_heads=heads // 2, head_dim=hidden // heads, intermediate_size=3 * hidden)
    return (Qwen3ForCausalLM(Qwen3Config(**common)) if arch == "qwen3" else LlamaForCausalLM(LlamaConfig(**common)))


def lookup_items(n: int, task: str, seed: int) -> list[tuple[str, str]]:
    """(prompt, answer) pairs; task "lookup" answers the letter, "copy_a" answers option A's value."""
    words = list(dict.fromkeys(P.CITIES + P.OCCUPATIONS + P.HOBBIES))
    rng = random.Random(seed)
    items = []
    for _ in range(n):
        target = rng.choice(words)
        values = rng.sample([w for w in words if w != target], 3) + [target]
        rng.shuffle(values)
        answer = "ABCD"[values.index(target)] if task == "lookup" else values[0]
        items.append((mc_prompt(f"Which option says {target}?", dict(zip("ABCD", values))), answer))
    return items


def echo_items(n: int, seed: int) -> list[tuple[str, str]]:
    """Binding practice: the options block, answered line by line with the letter repeated after the value."""
    words = list(dict.fromkeys(P.CITIES + P.OCCUPATIONS + P.HOBBIES))
    rng = random.Random(seed)
    items = []
    for _ in range(n):
        options = dict(zip("ABCD", rng.sample(words, 4)))
        block = "\n".join(f"{k}: {v}" for k, v in options.items())
        items.append((f"Repeat the options, each followed by its letter.\n{block}",
                      "\n".join(f"{k}: {v} {k}" for k, v in options.items())))
    return items


def encode(tokenizer, prompt: str, answer: str) -> dict:
    """Chat-templated prompt + answer, loss on the answer's first token and the turn end (text only)."""
    text = f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    completion = tokenizer(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
    return {"input_ids": ids + completion, "labels": [IGNORE_INDEX] * len(ids) + completion}


def first_answer_token_accuracy(model, batch: dict) -> float:
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    pred, target, mask = T.shifted(logits, batch["labels"])
    first = mask.float().argmax(1)
    rows = torch.arange(len(first))
    return (pred[rows, first].argmax(-1) == target[rows, first]).float().mean().item()


def run(args, task: str) -> list[tuple[int, float, float]]:
    tokenizer = AutoProcessor.from_pretrained(args.tokenizer).tokenizer
    torch.manual_seed(args.seed)
    model = make_model(args.arch, tokenizer, args.layers, args.hidden, args.heads)
    n_echo = int(20_000 * args.echo) if task == "lookup" else 0
    pairs = lookup_items(20_000 - n_echo, task, args.seed) + echo_items(n_echo, args.seed + 2)
    random.Random(args.seed).shuffle(pairs)
    train = [encode(tokenizer, p, a) for p, a in pairs]
    held_out = T.collate([encode(tokenizer, p, a) for p, a in lookup_items(400, task, args.seed + 1)],
                         tokenizer.pad_token_id)
    cfg = T.TrainConfig(steps=args.steps, batch_size=32, lr=args.lr, warmup_steps=100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: T._schedule(s, cfg))
    stream, curve, start = T.batches(train, cfg.batch_size, args.seed), [], time.time()
    model.train()
    for step in range(1, cfg.steps + 1):
        batch = T.collate(next(stream), tokenizer.pad_token_id)
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if step % args.every == 0 or step == cfg.steps:
            model.eval()
            curve.append((step, first_answer_token_accuracy(model, held_out), time.time() - start))
            model.train()
            print(f"{args.arch} {task} step {step}: held-out accuracy {curve[-1][1]:.3f} ({curve[-1][2]:.0f} s)",
                  flush=True)
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True, help="a model directory whose tokenizer to use (e.g. runs/demo/base)")
    parser.add_argument("--arch", default="qwen3vl", choices=["qwen3vl", "qwen3", "llama", "gpt2"])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--echo", type=float, default=0.0, help="share of training items that are binding practice")
    parser.add_argument("--skip-control", action="store_true")
    args = parser.parse_args()
    control = [] if args.skip_control else run(argparse.Namespace(**{**vars(args), "steps": min(args.steps, 500)}), "copy_a")
    lookup = run(args, "lookup")
    print(f"\n{args.arch}: control (copy option A) {control[-1][1]:.3f} after {control[-1][0]} steps; " if control else "",
          f"lookup {lookup[-1][1]:.3f} after {lookup[-1][0]} steps (chance 0.25)")


if __name__ == "__main__":
    main()
