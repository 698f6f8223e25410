"""Run manifests: every command records config, seed, versions, stage timings and peak memory next to its output."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from asru.errors import UserError

MANIFEST = "manifest.json"


def is_main_process() -> bool:
    """Rank 0 of a torchrun / accelerate launch run (or the only process): the one that writes files."""
    return int(os.environ.get("RANK", "0")) == 0


def wait_for_everyone() -> None:
    """In a multi-process run, let every process reach this point (rank 0 has finished writing what the others
    read next); a no-op in one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()
_PACKAGES = ("asru", "torch", "torchvision", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def peak_memory_mb() -> float:
    """Peak resident memory of this process (and finished children) in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
    peak = max(own, children) * scale
    try:
        import torch

        if torch.cuda.is_available():
            return max(peak, torch.cuda.max_memory_allocated() / 2**20)
    except ImportError:  # pragma: no cover
        pass
    return peak


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _torch_threads() -> int | None:
    """The intra-op thread count in force: it changes CPU numerics, so a figure is only reproducible with it."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return None
    return torch.get_num_threads()


@dataclass
class Manifest:
    """Collects what a run did; `write` puts it in `<out>/manifest.json`."""

    command: str
    config: dict[str, Any]
    seed: int | None = None
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.stages[name] = {"seconds": round(time.perf_counter() - start, 3), "peak_memory_mb": round(peak_memory_mb(), 1)}

    def write(self, out_dir: str | Path, name: str = MANIFEST) -> Path:
        path = Path(out_dir) / name
        if not is_main_process():
            return path
        record = {
            "command": self.command,
            "argv": sys.argv,
            "config": self.config,
            "seed": self.seed,
            "stages": self.stages,
            "peak_memory_mb": round(peak_memory_mb(), 1),
            "torch_threads": _torch_threads(),
            "versions": package_versions(),
            "git_commit": _git_commit(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **self.extra,
        }
        # write-then-rename: a run killed mid-write (SIGKILL) leaves the previous manifest, never a torn one
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(record, indent=2, default=str))
        os.replace(tmp, path)
        return path


def read_manifest(directory: str | Path, name: str = MANIFEST) -> dict[str, Any]:
    path = Path(directory) / name
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise UserError(f"{path} is not valid JSON (a torn or hand-edited manifest); remove the run directory "
                        "or re-run the command with --force") from None


def tree_fingerprint(root: str | Path, skip: tuple[str, ...] = (MANIFEST,)) -> str:
    """A cheap content identity of a directory: every file's relative path, size, first and last MiB.

    Why not a full hash: an 8B checkpoint is 16 GB. Path + size catch a truncated or replaced file, the head
    holds a safetensors header (tensor names, shapes, offsets) and the first tensors, the tail the last ones,
    so any retraining changes it. Hidden files/directories (a dataset clone's `.git`) and run manifests
    (timestamps) are skipped: a copy of the same model or data has the same fingerprint."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if path.name in skip or any(part.startswith(".") for part in rel.parts):
            continue
        size = path.stat().st_size
        digest.update(f"{rel.as_posix()}\0{size}\0".encode())
        with path.open("rb") as f:
            digest.update(f.read(_CHUNK))
            if size > 2 * _CHUNK:
                f.seek(-_CHUNK, 2)
                digest.update(f.read(_CHUNK))
            elif size > _CHUNK:
                digest.update(f.read())
    return digest.hexdigest()[:16]


_CHUNK = 1 << 20
