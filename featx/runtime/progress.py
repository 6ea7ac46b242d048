"""Progress for long work: one line that fits the terminal, updated in place, with rate and ETA.

Three places show it differently, each with what featx installs:
- a terminal: a rich live line on stderr, never wider than the terminal (the description is cut
  with an ellipsis; the numbers never are);
- Jupyter: the same text rewritten in place with a carriage return (rich's live display there
  needs ipywidgets and shows nothing without it);
- anything else (a pipe, a log file): silence while it runs, then the final line once.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import Progress, ProgressColumn, Task
from rich.text import Text

console = Console(stderr=True)
BAR_WIDTH = 20
NOTEBOOK_REFRESH_S = 0.5  # a notebook re-renders output on every write: a few writes a second


def clock(seconds: float | None) -> str:
    """4:07, or 1:04:07 past an hour (-:-- while not known yet)."""
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "-:--"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def rate_text(rate: float | None, unit: str) -> str:
    """'14.7 img/s', '1,235 img/s' (no decimals where they say nothing); '' while no rate is known."""
    if not rate:
        return ""
    return f"{rate:,.0f} {unit}/s" if rate >= 100 else f"{rate:.1f} {unit}/s"


def progress_line(description: str, done: float, total: float | None, rate: float | None,
                  elapsed: float, unit: str, width: int, bar: bool = True) -> str:
    """`description  ━━━━━━────  820/1,600  14.7 img/s  0:00:56 eta 0:00:53`, at most `width`
    characters: the bar gives way first, then the end of the description; the numbers stay whole."""
    count = f"{done:,.0f}/{total:,.0f}" if total else f"{done:,.0f}"
    speed = rate_text(rate, unit)
    remaining = (total - done) / rate if rate and total else None
    times = f"{clock(elapsed)} eta {clock(remaining if done < (total or 0) else 0)}"
    numbers = "  ".join(part for part in (count, speed, times) if part)
    room = width - len(numbers) - 2
    bar_text = ""
    spare = room - len(description) - 2  # what the description leaves for a bar
    if bar and total and spare >= 6:
        size = min(BAR_WIDTH, spare)
        filled = int(round(size * min(done / total, 1.0)))
        bar_text = "━" * filled + "─" * (size - filled) + "  "
        room -= len(bar_text)
    text = description if len(description) <= room else description[:max(room - 1, 0)] + "…"
    return f"{text}  {bar_text}{numbers}" if text else f"{bar_text}{numbers}"


class LineColumn(ProgressColumn):
    """The whole progress line as one column, sized to the console at every refresh."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        width = max(console.width - 1, 20)  # the last column stays free: no wrap
        return Text(progress_line(task.description, task.completed, task.total, task_rate(task),
                                  task.elapsed or 0.0, self.unit, width))


def task_rate(task: Task) -> float | None:
    """rich's rate, or the mean rate where rich has none: a task done in one step (predicting one
    image) has no speed in rich's sense, but its images and seconds still say one."""
    rate = task.finished_speed or task.speed
    if not rate and task.completed and task.elapsed:
        rate = task.completed / task.elapsed
    return rate


def display_mode(target: Console | None = None) -> str:
    """'terminal', 'notebook' or 'plain' (a pipe or a file) for where progress is drawn."""
    target = target or console
    if target.is_jupyter:
        return "notebook"
    return "terminal" if target.is_terminal else "plain"


def note_start(text: str, enabled: bool = True) -> None:
    """A line saying what the next silent seconds are for (importing torch, building a model),
    where someone is watching (a terminal, a notebook); nothing in a pipe or a log, whose reader
    wants the result lines alone."""
    if enabled and display_mode() in ("terminal", "notebook"):
        console.print(text, markup=False, highlight=False, style="dim", soft_wrap=True)


@contextmanager
def progress_bar(total: int, description: str, unit: str = "img",
                 enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Yields advance(n); the progress is drawn on stderr as `display_mode()` says."""
    mode = display_mode() if enabled else "off"
    if mode == "terminal":
        with Progress(LineColumn(unit), console=console, transient=False) as progress:
            task = progress.add_task(description, total=total)
            yield lambda n=1: progress.advance(task, n)
        return
    with TextProgress(total, description, unit, live=mode == "notebook", enabled=enabled) as advance:
        yield advance


class TextProgress:
    """Progress as plain text on stderr: rewritten in place (live) or written once at the end."""

    def __init__(self, total: int, description: str, unit: str, live: bool, enabled: bool = True,
                 width: int | None = None):
        self.total, self.description, self.unit = total, description, unit
        self.live, self.enabled = live, enabled
        self.width = width or max(console.width - 1, 20)
        self.done, self.start, self.shown = 0, time.perf_counter(), 0.0

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 and self.done else None
        return progress_line(self.description, self.done, self.total, rate, elapsed, self.unit,
                             self.width)

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if self.live and self.enabled and now - self.shown >= NOTEBOOK_REFRESH_S:
            self.shown = now
            sys.stderr.write("\r" + self.line())
            sys.stderr.flush()

    def __enter__(self) -> Callable[[int], None]:
        return self.advance

    def __exit__(self, *exc) -> None:
        if self.enabled and (self.done or not exc[0]):
            sys.stderr.write(("\r" if self.live else "") + self.line() + "\n")
            sys.stderr.flush()
