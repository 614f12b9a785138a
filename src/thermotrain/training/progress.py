"""A rich progress bar over a whole run (several loops), with steps per second and ETA.

``train(progress=...)`` reports ``(steps_since_last_call, steps_per_second)``; feed that to
:meth:`ProgressBar.update` with a description (the runner shows ``study: method``).
"""

from __future__ import annotations

__all__ = ["ProgressBar"]


class ProgressBar:
    """A rich progress bar with ETA over all methods (a no-op when disabled)."""

    def __init__(self, enabled: bool, total: int):
        self._bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), console=Console(stderr=True),
            )
            self._task = self._bar.add_task("", total=total, rate="")

    def __enter__(self) -> ProgressBar:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def update(self, advance: int, description: str, rate: float | None = None) -> None:
        if self._bar is not None:
            text = "" if rate is None else f"{rate:,.0f} steps/s"
            self._bar.update(self._task, advance=advance, description=description, rate=text)
