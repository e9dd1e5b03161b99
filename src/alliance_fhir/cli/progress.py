"""The progress bar of long writes: drawn on stderr, only on a terminal, only for big runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from alliance_fhir.cli.render import err

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

#: Below this many records a run is over before a bar would help.
MIN_TOTAL = 200


class Bar:
    """A rich progress bar fed by the sync engine's ``start``/``advance`` calls."""

    def __init__(self) -> None:
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._left = 0

    def start(self, total: int) -> None:
        from rich.progress import Progress  # only runs that draw a bar pay for the import

        if self._progress is not None and self._task is not None:
            # the next window's writes while this one's are still being sent: one bar
            self._left += total
            self._progress.update(self._task, total=(self._progress.tasks[0].total or 0) + total)
            return
        self.stop()
        if total < MIN_TOTAL or not err.is_terminal:
            return
        self._progress = Progress(console=err, transient=True)
        self._progress.start()
        self._task = self._progress.add_task("writing", total=total)
        self._left = total

    def advance(self, done: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, done)
            self._left -= done
            if self._left <= 0:
                self.stop()

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None
