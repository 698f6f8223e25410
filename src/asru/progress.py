"""One progress style for every long step: a Rich bar with ETA on a terminal, periodic log lines otherwise
(background jobs, CI), silent in tests."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def _enabled() -> bool:
    return os.environ.get("ASRU_PROGRESS", "1") != "0" and "PYTEST_CURRENT_TEST" not in os.environ


@contextmanager
def progress_bar(label: str, total: int) -> Iterator[Callable[..., None]]:
    """Yield `advance(n, **fields)`; shows done/total, elapsed, ETA and any fields (e.g. loss)."""
    if not _enabled():
        yield lambda n=1, **fields: None
    elif sys.stderr.isatty():
        with _rich_bar(label, total) as advance:
            yield advance
    else:
        yield _log_lines(label, total)


@contextmanager
def _rich_bar(label: str, total: int) -> Iterator[Callable[..., None]]:
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"), transient=False,
    )
    with progress:
        task = progress.add_task(label, total=total, info="")

        def advance(n: int = 1, **fields) -> None:
            info = " ".join(f"{k}={v}" for k, v in fields.items())
            progress.update(task, advance=n, **({"info": info} if info else {}))

        yield advance


def _log_lines(label: str, total: int, every_seconds: float = 30.0) -> Callable[..., None]:
    """A line on stderr every `every_seconds` and at the end: 'label 120/1500 (8%) 0:01:02 eta 0:11:53 loss=..'."""
    start = last = time.perf_counter()
    done = 0

    def advance(n: int = 1, **fields) -> None:
        nonlocal done, last
        done += n
        now = time.perf_counter()
        if now - last < every_seconds and done < total:
            return
        last = now
        elapsed = now - start
        eta = elapsed / done * (total - done) if done else 0.0
        info = " ".join(f"{k}={v}" for k, v in fields.items())
        print(f"{label} {done}/{total} ({100 * done / max(total, 1):.0f}%) {_clock(elapsed)} eta {_clock(eta)} {info}".rstrip(),
              file=sys.stderr, flush=True)

    return advance


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
