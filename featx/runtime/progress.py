"""Rich progress bars for long work: images/s and ETA, quiet when output is not a terminal."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text

console = Console(stderr=True)


class RateColumn(ProgressColumn):
    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} {self.unit}/s" if speed else f"- {self.unit}/s", style="cyan")


@contextmanager
def progress_bar(total: int, description: str, unit: str = "img",
                 enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Yields advance(n). Drawn on stderr; rich disables the live display when not a TTY."""
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        RateColumn(unit), TimeElapsedColumn(), TextColumn("eta"),
                        TimeRemainingColumn(), console=console, transient=False,
                        disable=not enabled)
    with progress:
        task = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task, n)
