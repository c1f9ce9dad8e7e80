"""Hydra's and OmegaConf's errors as one paragraph with the fix: what `entry.py` prints for a command line or config
that cannot work (exit status 2), instead of Hydra's multi-line report and exit status 1.

`command_line_message(exc)` reads an error met before the task starts: an override that does not parse (quoting),
a key that does not exist (its spelling, the nearest keys, `+key=` to add one), a `+key=` for a key that exists,
a `~key` that removes nothing, an unknown option of a config group (the options), a run folder that cannot be
created. `config_message(exc)` reads one met while the task builds its objects: a config key that the built class
does not take (`+model.net.base_channel=8`: the class's options), an interpolation to a key that does not exist.
Both return None for anything else, which stays a bug with its traceback.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Iterable
from typing import Any

from hydra.errors import ConfigCompositionException, InstantiationException, OverrideParseException
from hydra.utils import get_object
from omegaconf.errors import InterpolationKeyError, InterpolationToMissingValueError

from difflab.utils.files import unwritable

QUOTING = ("Quote a value that holds spaces, brackets, braces, commas, colons or `=` inside single quotes for the "
           "shell and double quotes for Hydra, e.g. 'data.name=\"my data\"'; a list is key=[a,b] and a mapping "
           "key='{a: 1}'.")


def _nearest(word: str, options: Iterable[Any]) -> str:
    """' (did you mean `x`?)' when an option is close to `word`, else ''."""
    close = difflib.get_close_matches(word, [str(o) for o in options], n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(f'`{c}`' for c in close)}?)" if close else ""


def _keys(node: Any) -> list[str]:
    try:
        return sorted(str(k) for k in node.keys() if str(k) != "hydra")
    except Exception:  # noqa: BLE001  (a node of another kind: no key list to offer)
        return []


def _listed(keys: list[str], limit: int = 16) -> str:
    return ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")


def _first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def _missing_key(exc: Any) -> str | None:
    """`Could not override 'a.b'` with OmegaConf's 'not in struct' cause: the key does not exist."""
    cause = exc.__cause__
    full_key, key = getattr(cause, "full_key", None), getattr(cause, "key", None)
    if not full_key or "not in struct" not in str(cause):
        return None
    value = str(exc).split("use +", 1)[-1].split("=", 1)[-1].strip() if "use +" in str(exc) else "<value>"
    siblings = _keys(getattr(cause, "parent_node", None))
    where = full_key.rsplit(".", 1)[0] if "." in full_key else ""
    listed = f" The keys {'under `' + where + '`' if where else 'at the top level'} are: {_listed(siblings)}." if siblings else ""
    return (f"Config key `{full_key}` does not exist{_nearest(str(key), siblings)}.{listed} Check its spelling; to add a "
            f"key that the config does not have, write +{full_key}={value} (only for a key the code reads).")


def _composition_message(exc: Any) -> str | None:
    text = str(exc)
    found = _missing_key(exc)
    if found:
        return found
    m = re.search(r"An item is already at '([^']+)'", text)
    if m:
        return (f"Config key `{m.group(1)}` exists already, so `+{m.group(1)}=...` cannot add it: set it without the "
                f"`+` ({m.group(1)}=<value>), or write ++{m.group(1)}=<value> to add or override it.")
    m = re.search(r"Could not delete from config\. '([^']+)' does not exist", text)
    if m:
        return (f"Config key `{m.group(1)}` does not exist, so `~{m.group(1)}` removes nothing: check its spelling "
                "(python <script>.py --cfg job lists the composed config).")
    options = getattr(exc, "options", None)
    m = re.search(r"Could not find '([^']+)'", text)
    if m and options is not None:
        group, _, choice = m.group(1).rpartition("/")
        return (f"There is no config `{m.group(1)}` ({group}={choice}){_nearest(choice, options)}: the options of "
                f"config group `{group}` are {', '.join(map(str, options))} (the files in conf/{group}/).")
    return None


def command_line_message(exc: BaseException) -> str | None:
    """One paragraph with the fix for an error met before the task starts (composing the config, creating the run
    folder), or None when `exc` is no such error."""
    if isinstance(exc, OverrideParseException):
        return (f"Cannot parse the command-line override `{exc.override}`: {_first_line(exc.message)}. {QUOTING} "
                "(Grammar: https://hydra.cc/docs/advanced/override_grammar/basic/)")
    if isinstance(exc, ConfigCompositionException):
        cause = f" ({_first_line(str(exc.__cause__))})" if exc.__cause__ is not None else ""
        return _composition_message(exc) or f"The config cannot be composed: {' '.join(str(exc).split())}{cause}."
    if isinstance(exc, OSError) and exc.filename:  # Hydra creating the run folder: paths.runs_dir unusable
        return str(unwritable(exc, exc.filename, "paths.runs_dir", "create the folder"))
    return None


def _target_options(target: str) -> list[str]:
    """The keyword arguments a `_target_` takes, [] when it cannot be read."""
    try:
        signature = inspect.signature(get_object(target))
    except Exception:  # noqa: BLE001  (no signature to offer: the message goes without it)
        return []
    return [n for n, p in signature.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n != "self"]


def _instantiation_message(exc: BaseException) -> str | None:
    """A config key that the class of `_target_` does not take, or a required one that is missing."""
    text = str(exc)
    target = re.search(r"Error in call to target '([^']+)'", text)
    full_key = re.search(r"full_key: (\S+)", text)
    unexpected = re.search(r"got an unexpected keyword argument '([^']+)'", text)
    missing = re.search(r"missing \d+ required (?:positional|keyword-only) arguments?: (.+?)[\"')]*$", text, re.M)
    if target is None or not (unexpected or missing):
        return None
    where = full_key.group(1) if full_key else "<the object's key>"
    options = _target_options(target.group(1))
    listed = f" Its options: {_listed(options, 24)}." if options else ""
    if unexpected:
        name = unexpected.group(1)
        return (f"Config key `{where}.{name}` is not an option of {target.group(1)}{_nearest(name, options)}.{listed} "
                f"Remove {name} from the command line (+{where}.{name}=...) or the config.")
    return (f"Config node `{where}` ({target.group(1)}) lacks the required option(s) {missing.group(1)}.{listed} "
            f"Pass {where}.<option>=<value>.")


def config_message(exc: BaseException) -> str | None:
    """One paragraph with the fix for a config mistake met while the task builds its objects (see the module
    docstring), or None when `exc` is no such mistake."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, InstantiationException):
            found = _instantiation_message(exc)
            if found:
                return found
        if isinstance(exc, (InterpolationKeyError, InterpolationToMissingValueError)):
            key = getattr(exc, "full_key", "") or "?"
            return (f"Config key `{key}` refers to a key that does not exist or has no value ({_first_line(exc.msg)}). "
                    f"Set {key}=<value> directly, or give the key it refers to a value.")
        exc = exc.__cause__ or exc.__context__
    return None
