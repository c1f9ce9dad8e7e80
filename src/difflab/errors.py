"""The user-error family: mistakes a person can fix, reported as one paragraph and exit status 2.

Every entry point (`train.py`, `sample.py`, `evaluate.py`, `compare.py`, `python -m difflab...`) runs
under `difflab.utils.entry`: an exception of this family (or one caused by it) prints its message on
stderr, without a traceback, and the process exits with status 2. Everything else is a bug and keeps
its traceback. `HYDRA_FULL_ERROR=1` shows the traceback of user errors too.

A message says what is wrong, which config key or file, and how to fix it, in one short paragraph.
Each class also derives from the built-in exception it refines, so `except ValueError` still works.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue


class UserError(Exception):
    """A mistake in what the user gave (config value, file, checkpoint, folder, network); not a bug."""


class ConfigError(UserError, ValueError):
    """A config value (command-line override or YAML) that cannot work."""

    @classmethod
    def bad_value(cls, key: str, problem: str, fix: str = "") -> ConfigError:
        """'Bad value for config key `key`: problem. fix' (the standard wording)."""
        err = cls(f"Bad value for config key `{key}`: {problem.rstrip('.')}." + (f" {fix}" if fix else ""))
        err.key = key
        return err


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the run needs is absent; the message names it, the config key and how to get it."""

    @classmethod
    def for_path(cls, path: str | Path, key: str, how_to_get: str, what: str = "File") -> Any:
        """'<what> not found at '<path>' (config key `key`). how_to_get'."""
        err = cls(f"{what} not found at '{path}' (config key `{key}`). {how_to_get}".strip())
        err.path, err.config_key = str(path), key
        return err


class CorruptFileError(UserError, ValueError):
    """A file exists but cannot be read as what it should be; the message names the file."""

    @classmethod
    def for_file(cls, path: str | Path, reason: str, hint: str = "") -> Any:
        """"Cannot read '<path>': reason. hint"."""
        hint = hint or "Delete or replace the file."
        err = cls(f"Cannot read '{path}': {reason}. {hint}")
        err.path = str(path)
        return err


class IncompatibleCheckpointError(UserError, RuntimeError):
    """A checkpoint that does not fit what it is used for (another network, another kind of model, unsafe content)."""


class UnwritableOutputError(UserError, PermissionError):
    """An output folder or file cannot be created or written, or would overwrite earlier results."""


class NetworkError(UserError, ConnectionError):
    """Something needs the network (a download, an online service) and it is not there or not allowed."""


def user_error_in(exc: BaseException) -> UserError | None:
    """The UserError that `exc` is or was raised from (through `raise ... from` or during handling), else None.

    Hydra's instantiate and OmegaConf's resolvers wrap the exceptions of constructors and resolvers;
    the user's mistake is found in the chain."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def user_message(exc: BaseException) -> str | None:
    """The one-paragraph message of a user's mistake, or None when `exc` is a bug."""
    found = user_error_in(exc)
    if found is not None:
        return str(found)
    if isinstance(exc, MissingMandatoryValue):
        key = getattr(exc, "full_key", "") or "?"
        return f"Config key `{key}` is required and has no value: pass {key}=<value> on the command line."
    if isinstance(exc, InterpolationToMissingValueError):  # `${base}` in a preset, `base: ???` left unset
        found = re.search(r"Missing mandatory value: ([\w.]+)", str(exc))
        if found is not None:
            key = found.group(1)
            return f"Config key `{key}` is required and has no value: pass {key}=<value> on the command line."
    return None
