"""One exception type for mistakes the user can fix; the CLI prints it as one line and exits 2."""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad input: the message says what is wrong, where, and how to fix it."""


def fresh_output_dir(path: str | Path, force: bool = False) -> Path:
    """Return `path` ready to be written; refuse to touch an existing non-empty directory unless `force`.

    Why: a run directory holds hours of training; overwriting it by accident must be impossible.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} exists and is a file; choose another path")
    if out.exists() and any(out.iterdir()) and not force:
        raise UserError(f"output directory {out} already exists and is not empty; pass --force to overwrite it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    return out
