"""Progress display for long steps: rich bars on a terminal, silent for --json and CI logs."""
from __future__ import annotations

import sys
from contextlib import contextmanager


class Progress:
    """Example::

        with Progress(enabled=True) as p:
            with p.step("bronze shop.orders", total=4) as advance:
                advance(1)
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._rich = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            console = Console(file=sys.stderr)
            self._rich = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), console=console, transient=False,
                                      disable=not console.is_terminal and not _force())
            self._rich.__enter__()
        return self

    def __exit__(self, *exc):
        if self._rich is not None:
            self._rich.__exit__(*exc)

    @contextmanager
    def step(self, description: str, total: int | None = 1):
        if self._rich is None:
            yield lambda n=1: None
            return
        task = self._rich.add_task(description, total=total)
        try:
            yield lambda n=1: self._rich.advance(task, n)
        finally:
            t = self._rich.tasks[[x.id for x in self._rich.tasks].index(task)]
            self._rich.update(task, completed=t.total if t.total is not None else t.completed)

    def log(self, message: str) -> None:
        if self._rich is not None:
            self._rich.console.print(message)


def _force() -> bool:
    from eai_ray.settings import settings
    return settings().progress
