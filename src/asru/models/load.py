"""Load any image-text model directory (tiny or real) as (model, processor) with one call.

Why: every stage takes a plain `save_pretrained` directory; the mistakes a user can make (wrong path, a
text-only model, an unmerged adapter) must come back as one clear line, not a transformers traceback.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

from asru.errors import UserError
from asru.models.layers import unwrap

_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model(
    path: str | Path,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    for_training: bool = False,
):
    """Return `(model, processor)` from a `save_pretrained` directory, on `device`, ready to generate or train.

    `device` None: CUDA when available, else CPU. `dtype` None: float32 on CPU, the checkpoint's dtype on GPU;
    otherwise a torch dtype, "float32", "bfloat16", "float16" or "auto". The tokenizer pads on the left
    (what batched generation needs); training collation chooses its own side explicitly.
    """
    root = _check_model_dir(path)
    device = torch.device(device) if device is not None else _default_device()
    config = _image_text_config(root)
    torch_dtype = _resolve_dtype(dtype, device)
    processor = load_processor(root)  # cheap, so its mistakes surface before minutes of weight loading
    check_weights(root)
    try:
        model = AutoModelForImageTextToText.from_pretrained(root, config=config, dtype=torch_dtype)
    except (OSError, ValueError, SafetensorError, EOFError, pickle.UnpicklingError) as err:
        raise UserError(f"could not load model weights from {root}: {_first_line(err)}; "
                        "copy or save the model again") from err
    model.to(device)
    model.train(for_training)
    if for_training:
        model.config.use_cache = False
    return model, processor


def load_processor(path: str | Path):
    """The directory's processor with left padding and a pad token (batched generation needs both)."""
    root = _check_model_dir(path)
    if not any((root / name).is_file() for name in _PROCESSOR_FILES):
        raise UserError(
            f"{root} has no image processor ({' or '.join(_PROCESSOR_FILES)}); "
            "save the model's processor there with processor.save_pretrained(dir)"
        )
    try:
        processor = AutoProcessor.from_pretrained(root)
    except (OSError, ValueError, TypeError) as err:
        raise UserError(
            f"could not load the processor from {root}: {_first_line(err)}; "
            "save the processor next to the model (processor.save_pretrained(dir))"
        ) from err
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None or not hasattr(processor, "image_processor"):
        raise UserError(f"{root} holds a text-only tokenizer, not an image-text processor; save the model's processor there")
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return processor


def _check_model_dir(path: str | Path) -> Path:
    root = Path(path)
    if not root.exists():
        raise UserError(f"model directory {root} does not exist; pass a directory written by save_pretrained")
    if not root.is_dir():
        raise UserError(f"model path {root} is a file; pass the directory that holds config.json and the weights")
    if not (root / "config.json").is_file():
        if (root / "adapter_config.json").is_file():
            raise UserError(
                f"{root} holds a PEFT adapter, not a full model; merge it (merge_and_unload) and save_pretrained the result"
            )
        raise UserError(f"{root} has no config.json; pass a directory written by save_pretrained (config.json + weights)")
    return root


def check_weights(root: Path) -> None:
    """Refuse a directory whose safetensors weights are missing, truncated or corrupt (an interrupted copy)
    with one line naming the file, before transformers fails deep inside loading. Opening a file reads only its
    header, which safetensors checks against the file's size, so this costs milliseconds even for 16 GB."""
    index = root / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(f"{index} is not a valid safetensors index ({_first_line(err)}); copy the model again") from err
        missing = [name for name in shards if not (root / name).is_file()]
        if missing:
            raise UserError(f"{root} lacks weight shard(s) {', '.join(missing)} listed in {index.name}; "
                            "copy the model again")
    else:
        shards = [p.name for p in sorted(root.glob("*.safetensors")) if p.name != "steering.safetensors"]
    for name in shards:
        try:
            with safe_open(root / name, framework="pt"):
                pass
        except (SafetensorError, OSError) as err:
            size = (root / name).stat().st_size
            raise UserError(f"weights file {root / name} ({size:,} bytes) is truncated or corrupt "
                            f"({_first_line(err)}); copy or save the model again") from None


def _image_text_config(root: Path):
    """The directory's config, refused unless transformers maps it to an image-text-to-text model."""
    try:
        config = AutoConfig.from_pretrained(root)
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"{root}/config.json cannot be read by transformers: {_first_line(err)}") from err
    if type(config) not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING:
        kind = getattr(config, "model_type", "unknown")
        raise UserError(
            f"{root} is a '{kind}' model, not an image-text model; pass a multimodal model such as Qwen3-VL, "
            "Qwen2.5-VL or LLaVA"
        )
    return config


def _resolve_dtype(dtype: str | torch.dtype | None, device: torch.device):
    if dtype is None:
        return torch.float32 if device.type == "cpu" else "auto"
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype not in _DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _default_device() -> torch.device:
    """This process's GPU (LOCAL_RANK under torchrun / accelerate launch: eight ranks must not all load onto
    cuda:0), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def save_model(model, processor, out: Path) -> Path:
    """Write model + processor as a plain `save_pretrained` directory, atomically (a failed save leaves the previous
    directory intact), with generation settings restored (use_cache on, left padding)."""
    from asru.manifest import is_main_process, wait_for_everyone

    out = Path(out)
    if is_main_process():  # a multi-process run: every process holds the same weights, rank 0 writes them
        _write_model(model, processor, out)
    wait_for_everyone()  # the others may read the directory next
    return out


def _write_model(model, processor, out: Path) -> None:
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model = unwrap(model)
    model.config.use_cache = True  # load_model(for_training=True) turned it off; generation wants it back
    model.save_pretrained(tmp)
    processor.tokenizer.padding_side = "left"
    processor.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
