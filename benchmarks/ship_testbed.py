"""The maintainer's step that ships the testbed: copy the models a rebuild trained into the package.

    asru demo --rebuild --out runs/rebuild --compare ""
    python benchmarks/ship_testbed.py --runs runs/rebuild [--force]

Writes src/asru/shipped/<preset>-seed<seed>/{base,vanilla,oracle_forget_5,oracle_forget_10,oracle_forget_15}/,
each a save_pretrained directory whose manifest.json holds the world's content fingerprint, the recipe, the
training run's manifest and a SHA-256 of every file. Commit the result; `asru demo` then starts from it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asru.errors import UserError
from asru.manifest import read_manifest
from asru.testbed import ship


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, required=True, help="the directory of `asru demo --rebuild --out`")
    parser.add_argument("--force", action="store_true", help="replace a testbed already shipped for this preset/seed")
    args = parser.parse_args()
    world = read_manifest(args.runs / "world").get("config") or {}
    try:
        if not world:
            raise UserError(f"{args.runs}/world has no world manifest; pass the directory of `asru demo --rebuild`")
        out = ship(args.runs, world["preset"], world["seed"], force=args.force)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"shipped {out} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
