"""Where GRPO's time goes: rollout sampling vs teacher-forced scoring of the same batch, plus a few real steps.

Usage: python benchmarks/grpo_throughput.py [--model DIR] [--prompts 2] [--num-generations 8]
       [--max-new-tokens 32] [--repeats 3] [--steps 3] [--lora] [--threads N]

Without --model a random tiny Qwen3-VL is built in a temporary directory. The batch has the shape one GRPO
micro-batch has (prompts x num_generations rows, half the prompts with an image, left padded). Generation samples
exactly --max-new-tokens tokens per row (temperature 1.5, top_p 0.95, EOS ignored) so both figures count the
same tokens; the forward pass scores those completions teacher-forced, as GRPO does for its log-probs.
Prints both token rates, their ratio, then wall time and peak memory of --steps GRPO steps via run_grpo.
"""

from __future__ import annotations

import argparse
import io
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from asru.data.schema import QAItem
from asru.models.batch import encode_prompts, move_batch, pad_token_id
from asru.models.load import load_model
from asru.models.tiny import build_processor, build_tiny_model, build_tokenizer, save_tiny
from asru.rl.grpo import GRPOSettings, boundary_dataset, run_grpo
from asru.rl.rewards import asru_reward

QUESTIONS = [
    ("Where was the person in the image born?", "She was born in Lima.", True),
    ("What is this person's job?", "He works as a pilot.", False),
    ("Where does this person currently live?", "She lives in Oslo.", True),
    ("What is the name of the person in the image?", "His name is Tomas Berg.", False),
]


def tiny_model_dir(root: Path) -> Path:
    """A random tiny Qwen3-VL (the default TinyConfig) saved under `root`."""
    tokenizer = build_tokenizer([q for q, a, _ in QUESTIONS for _ in range(8)] + [a for _, a, _ in QUESTIONS])
    return save_tiny(build_tiny_model(tokenizer), build_processor(tokenizer), root / "tiny")


def face(seed: int, size: int = 448) -> bytes:
    """A deterministic stand-in image (PNG bytes); its content does not matter for timing."""
    g = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(size, size, 3, generator=g) * 255).to(torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def boundary_items(n: int) -> tuple[list[QAItem], list[bool]]:
    """`n` boundary items, every other one with an image (as in the boundary set)."""
    items, flags = [], []
    for i in range(n):
        question, answer, forget = QUESTIONS[i % len(QUESTIONS)]
        image = face(i) if i % 2 == 0 else None
        items.append(QAItem(f"b{i}", question, answer, "gen", "image" if image else "text", image=image))
        flags.append(forget)
    return items, flags


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def rollout_vs_forward(model, processor, prompts, generations: int, new_tokens: int, repeats: int) -> dict:
    """Tokens/s of sampling `new_tokens` per row vs one teacher-forced forward over the same rows."""
    rows = [p for p in prompts for _ in range(generations)]
    batch = move_batch(encode_prompts(processor, rows, padding_side="left"), model)
    device = batch["input_ids"].device
    sampling = dict(do_sample=True, temperature=1.5, top_p=0.95, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                    pad_token_id=pad_token_id(processor), suppress_tokens=[model.config.image_token_id])
    model.eval()
    out = model.generate(**batch, **sampling)  # warm-up (allocator, kernels)
    gen_s = fwd_s = 0.0
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = model.generate(**batch, **sampling)
        sync(device)
        gen_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        model(**teacher_forced(batch, out))
        sync(device)
        fwd_s += time.perf_counter() - t0
    tokens = len(rows) * new_tokens * repeats
    return {"rows": len(rows), "prompt_len": batch["input_ids"].shape[1], "gen_tok_s": tokens / gen_s,
            "fwd_tok_s": tokens / fwd_s}


def teacher_forced(batch: dict, sequences: torch.Tensor) -> dict:
    """The prompt batch extended with the sampled completions (mask and mm_token_type_ids padded with 1s / 0s)."""
    extra = sequences.shape[1] - batch["input_ids"].shape[1]
    inputs = dict(batch, input_ids=sequences)
    inputs["attention_mask"] = torch.cat([batch["attention_mask"], batch["attention_mask"].new_ones(len(sequences), extra)], 1)
    if "mm_token_type_ids" in batch:
        ids = batch["mm_token_type_ids"]
        inputs["mm_token_type_ids"] = torch.cat([ids, ids.new_zeros(len(sequences), extra)], 1)
    return inputs


def grpo_steps(model_dir: Path, out: Path, args) -> dict:
    """Wall time and peak memory of `args.steps` GRPO steps at the benchmark's batch shape."""
    items, flags = boundary_items(max(4, args.prompts * args.steps))
    settings = GRPOSettings(num_generations=args.num_generations, per_device_train_batch_size=args.prompts * args.num_generations,
                            max_completion_length=args.max_new_tokens, max_steps=args.steps, save_steps=10**6,
                            report_to="none", lora=args.lora)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    stats = run_grpo(model_dir, out, boundary_dataset(items, flags), [asru_reward], settings)
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
    return {"wall_s": wall, "train_s": stats["seconds"], "steps": stats["steps"], "cuda_peak_gib": peak, "rss_peak_gib": rss}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="save_pretrained model directory (default: random tiny Qwen3-VL)")
    parser.add_argument("--prompts", type=int, default=2, help="distinct prompts per micro-batch")
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or tiny_model_dir(Path(tmp))
        model, processor = load_model(model_dir)
        items, _ = boundary_items(args.prompts)
        prompts = [(i.question, i.image) for i in items]
        rates = rollout_vs_forward(model, processor, prompts, args.num_generations, args.max_new_tokens, args.repeats)
        device = next(model.parameters()).device
        dtype = next(model.parameters()).dtype
        del model
        steps = grpo_steps(Path(model_dir), Path(tmp) / "grpo", args)
    print(f"device {device} dtype {dtype} threads {torch.get_num_threads()} model {args.model or 'random tiny Qwen3-VL'}")
    print(f"batch {rates['rows']} rows = {args.prompts} prompts x {args.num_generations} generations, "
          f"prompt length {rates['prompt_len']}, {args.max_new_tokens} new tokens")
    print(f"rollout generation : {rates['gen_tok_s']:10.1f} completion tokens/s")
    print(f"teacher-forced fwd : {rates['fwd_tok_s']:10.1f} completion tokens/s")
    print(f"forward / generation ratio: {rates['fwd_tok_s'] / rates['gen_tok_s']:.1f}x")
    mem = f"cuda peak {steps['cuda_peak_gib']:.2f} GiB" if steps["cuda_peak_gib"] is not None else "no CUDA"
    print(f"{steps['steps']} GRPO steps{' (LoRA)' if args.lora else ''}: wall {steps['wall_s']:.1f} s "
          f"(train loop {steps['train_s']:.1f} s, {steps['train_s'] / max(steps['steps'], 1):.2f} s/step), "
          f"{mem}, process peak RSS {steps['rss_peak_gib']:.2f} GiB")


if __name__ == "__main__":
    main(sys.argv[1:])
