"""The shipped testbed: the tiny preset's base, vanilla and retain-only oracles, trained once by asru's own code
and shipped inside the package (as TOFU and MUSE publish their target and retain models), so a newcomer's
`asru demo` starts from them instead of spending an hour training the same weights every newcomer gets.

Each shipped model is a `save_pretrained` directory under `asru/shipped/<preset>-seed<seed>/<stage>/` whose
`manifest.json` says what it is: the world it was trained on (a content fingerprint), the recipe (the stage's
config without local paths), the training run's own manifest (timings, threads, versions) and a SHA-256 of every
file. The demo installs a shipped model only when the world it just built and the recipe in the code equal the
manifest's; otherwise it names the stage that no longer matches and trains it. Nothing under the package
directory is ever written by a command; `benchmarks/ship_testbed.py` (a maintainer's step) writes it.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asru.errors import UserError
from asru.manifest import MANIFEST

SHIPPED_DIR = Path(__file__).parent / "shipped"
TESTBED_SPLITS = ("forget_5", "forget_10", "forget_15")  # one retain-only oracle per MLLMU-Bench forget split
LOCAL_KEYS = ("world", "base")  # config keys that hold this machine's paths, not the recipe


def stage_names(splits: tuple[str, ...] = TESTBED_SPLITS) -> tuple[str, ...]:
    """The testbed's stages in training order (each depends on base; oracles share vanilla's recipe)."""
    return ("base", "vanilla", *(f"oracle_{s}" for s in splits))


def recipe(config: dict[str, Any]) -> dict[str, Any]:
    """What a stage's weights depend on besides the world: its config without this machine's paths."""
    return json.loads(json.dumps({k: v for k, v in config.items() if k not in LOCAL_KEYS}, default=str))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_files(directory: Path) -> dict[str, str]:
    """SHA-256 of every file of a model directory (not its manifest, not training checkpoints)."""
    return {p.relative_to(directory).as_posix(): _sha256(p) for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != MANIFEST and not p.relative_to(directory).parts[0].startswith("checkpoint")}


def world_fingerprint(world: Path) -> str:
    """A content identity of a benchmark directory that survives library upgrades: every parquet row's values,
    with each image hashed as decoded pixels (Pillow's zlib and pyarrow's file metadata change the bytes on disk
    from one version to the next, never the pixels or the text a model is trained on)."""
    import numpy as np
    import pyarrow.parquet as pq
    from PIL import Image

    pixels: dict[bytes, str] = {}  # one person's view appears in many rows

    def value(v):
        if isinstance(v, dict) and "bytes" in v:
            raw = v["bytes"]
            if not raw:
                return None
            key = hashlib.sha256(raw).digest()
            if key not in pixels:
                array = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
                pixels[key] = f"{hashlib.sha256(array.tobytes()).hexdigest()}{array.shape}"
            return pixels[key]
        if isinstance(v, list):
            return [value(x) for x in v]
        if isinstance(v, dict):
            return {k: value(x) for k, x in v.items()}
        return v

    digest = hashlib.sha256()
    world = Path(world)
    for file in sorted(world.rglob("*.parquet")):
        rel = file.relative_to(world)
        if any(part.startswith(".") for part in rel.parts):
            continue
        digest.update(rel.as_posix().encode())
        for row in pq.read_table(file).to_pylist():
            digest.update(json.dumps({k: value(v) for k, v in row.items()}, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _first_difference(shipped: Any, code: Any, where: str = "") -> str:
    """The first key path at which two recipes differ, as `path: shipped X, code Y`."""
    if isinstance(shipped, dict) and isinstance(code, dict):
        for key in sorted(set(shipped) | set(code)):
            if shipped.get(key) != code.get(key):
                return _first_difference(shipped.get(key), code.get(key), f"{where}.{key}" if where else str(key))
    return f"{where or 'recipe'}: shipped {shipped!r}, code {code!r}"


@dataclass(frozen=True)
class ShippedModel:
    name: str
    path: Path
    manifest: dict[str, Any]

    @property
    def recipe(self) -> dict[str, Any]:
        return self.manifest["testbed"]["recipe"]

    def mismatch(self, config: dict[str, Any]) -> str | None:
        """Why this model is not the one the code would train with `config` (None: it is)."""
        code = recipe(config)
        return None if code == self.recipe else _first_difference(self.recipe, code)

    def verify(self) -> None:
        """Refuse a shipped directory whose files differ from the checksums it was shipped with."""
        expected = self.manifest["testbed"]["files"]
        found = {p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file() and p.name != MANIFEST}
        for name, sha in expected.items():
            file = self.path / name
            if not file.is_file() or _sha256(file) != sha:
                what = "is missing" if not file.is_file() else "does not match its checksum (truncated or modified)"
                raise UserError(f"shipped model {self.path}: {name} {what}; reinstall asru "
                                "(`pip install --force-reinstall .`) or train the testbed with `asru demo --rebuild`")
        extra = sorted(found - set(expected))
        if extra:
            raise UserError(f"shipped model {self.path} holds files it was not shipped with ({', '.join(extra)}); "
                            "remove them or reinstall asru")

    def install(self, out: Path) -> dict[str, Any]:
        """Copy the verified weights into a run directory; returns the provenance the run manifest records."""
        self.verify()
        for name in self.manifest["testbed"]["files"]:
            target = out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.path / name, target)
        return {"from": str(self.path), "trained": self.manifest["trained"]}


@dataclass(frozen=True)
class Testbed:
    preset: str
    seed: int
    world_fingerprint: str
    models: dict[str, ShippedModel]

    def model(self, name: str) -> ShippedModel:
        if name not in self.models:
            raise UserError(f"the shipped testbed has no {name} (it ships {', '.join(self.models)}); "
                            "train it with `asru demo --rebuild`")
        return self.models[name]


def testbed_dir(preset: str, seed: int, root: Path | None = None) -> Path:
    return (root or SHIPPED_DIR) / f"{preset}-seed{seed}"


def shipped_testbed(preset: str, seed: int, root: Path | None = None) -> Testbed | None:
    """The testbed shipped for (preset, seed), or None when asru ships none for it."""
    directory = testbed_dir(preset, seed, root)
    if not directory.is_dir():
        return None
    models = {}
    for stage in stage_names():
        path = directory / stage
        if not (path / MANIFEST).is_file():
            continue
        try:
            manifest = json.loads((path / MANIFEST).read_text())
            manifest["testbed"]["files"], manifest["testbed"]["recipe"], manifest["trained"]  # noqa: B018
        except (ValueError, KeyError, TypeError):
            raise UserError(f"shipped model {path} has a damaged manifest.json; reinstall asru") from None
        models[stage] = ShippedModel(stage, path, manifest)
    if "base" not in models:
        raise UserError(f"the shipped testbed {directory} has no base model; reinstall asru")
    fingerprints = {m.manifest["testbed"]["world_fingerprint"] for m in models.values()}
    if len(fingerprints) != 1:
        raise UserError(f"the shipped testbed {directory} mixes models of different worlds; reinstall asru")
    return Testbed(preset, seed, fingerprints.pop(), models)


def available(root: Path | None = None) -> list[str]:
    """`<preset>-seed<seed>` of every shipped testbed."""
    root = root or SHIPPED_DIR
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def ship(runs: Path, preset: str, seed: int, root: Path | None = None, force: bool = False) -> Path:
    """Copy the trained stages of a rebuild (`asru demo --rebuild --out RUNS`) into the package's testbed, each with
    its world fingerprint, recipe, training manifest and checksums. The maintainer's step; no command calls it."""
    from asru.errors import fresh_output_dir
    from asru.manifest import read_manifest

    world = world_fingerprint(runs / "world")
    out = fresh_output_dir(testbed_dir(preset, seed, root), force=force)
    for stage in stage_names():
        source = runs / stage
        trained = read_manifest(source)
        if trained.get("status") != "done" or trained.get("shipped"):
            raise UserError(f"{source} is not a finished training run (status {trained.get('status')!r}"
                            f"{', installed from the shipped testbed' if trained.get('shipped') else ''}); "
                            "ship only what `asru demo --rebuild` trained")
        files = model_files(source)
        target = out / stage
        for name in files:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, target / name)
        record = {"command": trained["command"],
                  "testbed": {"preset": preset, "seed": seed, "world_fingerprint": world,
                              "recipe": recipe(trained["config"]), "files": files},
                  "trained": {k: trained.get(k) for k in ("stages", "torch_threads", "versions", "git_commit",
                                                          "created", "result", "seed")}}
        (target / MANIFEST).write_text(json.dumps(record, indent=2, default=str) + "\n")
    return out
