"""Progress bars, compact log lines and optional TensorBoard scalars.

Progress bars use ``tqdm`` when it is installed and enabled (on stderr, so logs stay clean);
otherwise they are silent. Log lines go to stdout and to ``log.txt`` in the run folder.
TensorBoard scalars are written only when asked for, and asking without ``tensorboard``
installed is a :class:`~hyperdnn.engine.errors.UsageError`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from hyperdnn.engine.errors import UsageError

__all__ = ["ProgressBar", "RunLogger", "tensorboard_available"]


class ProgressBar:
    """A progress bar over ``total`` steps (a no-op when disabled, without tqdm, or when
    standard error is neither a terminal nor a notebook's: in a log file or a pipe a bar's
    carriage returns would run into the log lines).

    Use as a context manager; :meth:`update` advances it, :meth:`note` sets its suffix text.
    """

    def __init__(self, total: int, desc: str, enabled: bool = True):
        self._bar: Any = None
        shown = getattr(sys.stderr, "isatty", lambda: False)() or "ipykernel" in sys.modules
        if enabled and shown:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # pragma: no cover - tqdm is in the apps extra
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def note(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def tensorboard_available() -> bool:
    """Whether ``torch.utils.tensorboard`` can be used (the ``tensorboard`` package is installed)."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


class RunLogger:
    """Writes compact log lines to a stream and ``log_file``; optionally TensorBoard scalars.

    Args:
        log_file: appended to (created if needed); ``None``: no file (the processes other
            than rank 0 of a data-parallel run).
        stream: where lines are echoed (default stdout); ``None`` for none.
        tensorboard_dir: write TensorBoard event files there (``None``: no TensorBoard).
    """

    def __init__(
        self,
        log_file: str | Path | None,
        stream: TextIO | None = sys.stdout,
        tensorboard_dir: str | Path | None = None,
    ):
        self.log_file = None if log_file is None else Path(log_file)
        self.stream = stream
        self._start = time.perf_counter()
        self._writer: Any = None
        if tensorboard_dir is not None:
            if not tensorboard_available():
                raise UsageError("--tensorboard needs the tensorboard package: pip install 'hyperdnn[tensorboard]'")
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(tensorboard_dir))

    def log(self, message: str) -> None:
        """Write one line, prefixed with the elapsed time."""
        elapsed = time.perf_counter() - self._start
        line = f"[{int(elapsed) // 60:3d}:{int(elapsed) % 60:02d}] {message}"
        if self.stream is not None:
            print(line, file=self.stream, flush=True)
        if self.log_file is not None:
            with self.log_file.open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")

    def scalar(self, tag: str, value: float, step: int) -> None:
        """Record a scalar for TensorBoard (no-op without it)."""
        if self._writer is not None:
            self._writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
