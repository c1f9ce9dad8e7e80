"""Progress of long work (training steps, sampled images, reference features): count / total, rate, ETA.

On a terminal one line is rewritten in place on stderr; elsewhere (SLURM logs, pipes, files) the same facts are
plain log lines: one each time another `every` fraction of the work is done or `interval` seconds have passed
since the last line, and the last one. The rate is measured over the work done since this display started (a resumed run's earlier steps do
not count), and ETA = (total - done) / rate:

    sampling 32/64 images (50%) | 12.3 images/s | NFE 20 | ETA 0:00:03
    train step 120/2000 (6%) | 340 images/s | loss 0.0312 | ETA 0:05:31
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

log = logging.getLogger("difflab.progress")

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    """H:MM:SS (or 'd days, H:MM:SS'); '?' when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    text = f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{days} days, {text}" if days else text


def _number(value: Any) -> str:
    """A fact's value for the line: floats with 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class Progress:
    """Counts `done` of `total` units (`unit`: 'images', 'step'); `rate_unit` is what the rate counts (images/s
    of a training run that counts steps). `clock` and `stream` are injectable (tests use a fake clock)."""

    def __init__(self, desc: str, total: float, unit: str = "images", *, rate_unit: str | None = None,
                 initial: float = 0, interval: float = 30.0, every: float = 0.1, stream: TextIO | None = None,
                 tty: bool | None = None, clock: Callable[[], float] = time.monotonic, enabled: bool = True) -> None:
        self.desc, self.total, self.unit = desc, float(total), unit
        self.rate_unit = rate_unit or unit
        self.interval, self.every = float(interval), float(every)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self.clock, self.enabled = clock, enabled
        self.done = self.initial = float(initial)
        self.counted = 0.0  # rate units since the start (images of the steps run here)
        self.facts: dict[str, Any] = {}
        self.start = self.clock()
        self._last_line, self._last_fraction, self._width, self._finished = self.start, self.fraction(), 0, False

    def fraction(self) -> float:
        """Share of the work done, in [0, 1] (0 when the total is unknown)."""
        return min(1.0, self.done / self.total) if self.total > 0 else 0.0

    def rate(self) -> float:
        """Rate units per second since the start (NaN before any time has passed)."""
        elapsed = self.clock() - self.start
        return self.counted / elapsed if elapsed > 0 else math.nan

    def eta(self) -> float:
        """Seconds left at the rate so far: (total - done) / (done here / elapsed); NaN when unknown."""
        elapsed, here = self.clock() - self.start, self.done - self.initial
        if elapsed <= 0 or here <= 0 or self.total <= 0:
            return math.nan
        return max(0.0, self.total - self.done) * elapsed / here

    def line(self) -> str:
        """'desc done/total unit (p%) | rate | facts | ETA'."""
        done = int(self.done) if float(self.done).is_integer() else round(self.done, 1)
        total = f"/{int(self.total)}" if self.total > 0 else ""
        unit = f" {self.unit}" if self.unit else ""
        parts = [f"{self.desc} {done}{total}{unit}" + (f" ({100 * self.fraction():.0f}%)" if self.total > 0 else "")]
        rate = self.rate()
        parts.append(f"{rate:.3g} {self.rate_unit}/s" if math.isfinite(rate) else f"? {self.rate_unit}/s")
        parts += [f"{k} {_number(v)}" for k, v in self.facts.items() if v is not None]
        parts.append(f"ETA {format_duration(self.eta())}")
        return " | ".join(parts)

    def update(self, n: float = 1, counted: float | None = None, **facts: Any) -> None:
        """`n` more units done (`counted` rate units, default n), with facts for the line (loss=..., NFE=...)."""
        self.set(self.done + n, counted, **facts)

    def set(self, done: float, counted: float | None = None, **facts: Any) -> None:
        """The count is now `done` (`counted` more rate units than before, default the difference)."""
        self.counted += (done - self.done) if counted is None else counted
        self.done = float(done)
        self.facts.update(facts)
        if self.enabled and not self._finished:
            self._finished = self.total > 0 and self.done >= self.total
            self._show(final=self._finished)

    def _show(self, final: bool = False) -> None:
        """Redraw the terminal line, or log a plain line when due (interval passed or `every` more done)."""
        now = self.clock()
        if self.tty:
            if final or now - self._last_line >= 0.1:
                text = self.line()
                self.stream.write("\r" + text.ljust(self._width) + ("\n" if final else ""))
                self.stream.flush()
                self._width, self._last_line = len(text), now
            return
        due = now - self._last_line >= self.interval or self.fraction() - self._last_fraction >= self.every - 1e-9
        if final or due:
            log.info(self.line())
            self._last_line, self._last_fraction = now, self.fraction()

    def close(self) -> None:
        """End the display: the last line when it was not shown yet (e.g. a run that stopped early)."""
        if self.enabled and not self._finished and self.done > self.initial:
            if self.tty:
                self.stream.write("\r" + self.line().ljust(self._width) + "\n")
                self.stream.flush()
            else:
                log.info(self.line())
        self.enabled = False
