"""How the studio's events report: a user's mistake becomes the paragraph the CLI prints (`Error: ...`) in the
tab's status line, never a traceback; a bug is logged with its traceback and named as one."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from difflab.errors import user_message

log = logging.getLogger(__name__)


class Shown(Exception):
    """An error already worded for the status line."""


def error_text(exc: BaseException) -> str:
    """The status line of a failed event: a user error's CLI paragraph, or a bug's name (its traceback is logged)."""
    message = user_message(exc)
    if message is not None:
        return f"Error: {message.strip()}"
    log.error("studio bug", exc_info=exc)
    return f"Internal error (a bug, its traceback is in the studio's log): {type(exc).__name__}: {exc}"


@contextmanager
def shown_errors() -> Iterator[None]:
    """Turn any exception of an event into `Shown(status line)`."""
    try:
        yield
    except Shown:
        raise
    except Exception as exc:
        raise Shown(error_text(exc)) from exc
