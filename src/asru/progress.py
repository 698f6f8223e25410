"""One Rich progress bar style for every long step (with ETA), silent when output is not a terminal and in tests."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def _enabled() -> bool:
    return os.environ.get("ASRU_PROGRESS", "1") != "0" and "PYTEST_CURRENT_TEST" not in os.environ


@contextmanager
def progress_bar(label: str, total: int) -> Iterator[Callable[..., None]]:
    """Yield `advance(n, **fields)`; the bar shows done/total, elapsed, ETA and any fields (e.g. loss)."""
    if not _enabled():
        yield lambda n=1, **fields: None
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
        transient=False,
    )
    with progress:
        task = progress.add_task(label, total=total, info="")

        def advance(n: int = 1, **fields) -> None:
            info = " ".join(f"{k}={v}" for k, v in fields.items())
            progress.update(task, advance=n, **({"info": info} if info else {}))

        yield advance
