"""Everything the user sees: the only module that imports rich.

On a terminal: progress bars with rate and ETA, coloured tables. Off a terminal (a shell script's log):
plain, timestamped log lines at a modest rate, no control characters.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.table import Table

_err = Console(stderr=True, highlight=False)
_out = Console(highlight=False)


def interactive() -> bool:
    return _err.is_terminal


def error(message: str) -> None:
    """The one line a user sees for an error they can fix."""
    _err.print(f"[bold red]cellseg: error:[/] {message}", markup=True, soft_wrap=True) if interactive() else \
        print(f"cellseg: error: {message}", file=sys.stderr, flush=True)


def usage_error(message: str, usage: str | None, hint: str | None) -> None:
    """A malformed command line, as click reports it: the error, the usage line and where help is."""
    _err.print(f"[bold red]cellseg: usage error:[/] {message}", markup=True, soft_wrap=True) if interactive() else \
        print(f"cellseg: usage error: {message}", file=sys.stderr, flush=True)
    for line in (usage, hint):
        if line:
            print(" ".join(line.split()), file=sys.stderr, flush=True)


def info(message: str) -> None:
    if interactive():
        _err.print(message, soft_wrap=True)
    else:
        print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    info(f"warning: {message}")


def print_json(data: Any) -> None:
    """Machine-readable output on stdout (one JSON document)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, justify="right" if c != columns[0] else "left")
    for r in rows:
        t.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in r])
    _out.print(t)


class _Rounds:
    """Steps per second since the current round began; a ``done`` below the previous one starts a new round."""

    def __init__(self) -> None:
        self.start, self.base, self.previous = time.monotonic(), 0, 0

    def step(self, done: int) -> tuple[bool, float]:
        """``(new_round, rate)`` after reaching ``done``; the rate is 0 at a round's first step."""
        now = time.monotonic()
        new_round = done < self.previous
        if new_round:
            self.start, self.base = now, done
        self.previous = done
        elapsed = now - self.start
        return new_round, (done - self.base) / elapsed if elapsed > 0 else 0.0


def _info(info: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())


@contextlib.contextmanager
def progress(description: str, *, unit: str = "frames", quiet: bool = False) -> Iterator[Callable[..., None]]:
    """A callback ``report(done, total, **info)`` that draws a bar on a terminal or logs plain lines.

    A ``done`` below the previous call's starts a new round (the next epoch of training): the bar, its rate
    and its ETA restart from there."""
    if quiet:
        yield lambda done, total, **info: None
        return
    rounds = _Rounds()
    if interactive():
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                   TimeRemainingColumn(), TextColumn("{task.fields[extra]}")]
        with Progress(*columns, console=_err, transient=False) as bar:
            task = bar.add_task(description, total=None, rate="", extra="")

            def report(done: int, total: int, **info: Any) -> None:
                new_round, rate = rounds.step(done)
                if new_round:
                    bar.reset(task, total=total)
                bar.update(task, completed=done, total=total, rate=f"{rate:.2f} {unit}/s", extra=_info(info))

            yield report
        return
    last = [0.0]

    def log(done: int, total: int, **info: Any) -> None:
        _, rate = rounds.step(done)
        now = time.monotonic()
        if done < total and now - last[0] < 10:
            return
        last[0] = now
        eta = f"{(total - done) / rate:.0f} s" if rate > 0 else "?"    # unknown at the first step of a round
        extra = _info(info)
        print(f"{time.strftime('%H:%M:%S')} {description}: {done}/{total} {unit} ({rate:.2f}/s, ETA {eta})"
              f"{' ' + extra if extra else ''}", file=sys.stderr, flush=True)

    yield log
