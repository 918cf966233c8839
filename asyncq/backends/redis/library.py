"""The Redis backend's scripts as one function library (Redis >= 7.0, Valkey >= 7.2).

A script run by ``EVALSHA`` executes ``prelude.lua`` whole on every call: some
fifty functions made anew before the script's own lines run, which costs the
server more than most scripts' own work. A function library runs the prelude
once, when ``FUNCTION LOAD`` loads it; a call (``FCALL``) runs only the
script's body. The transport uses the library where the server has functions,
and ``EVALSHA`` elsewhere.

The library's text, in order:

- ``local KEYS, ARGV``: what the scripts read as globals under ``EVALSHA`` are
  locals of the library here, set by each function before its body runs;
- the prelude, less its last line (``start(KEYS[1])``: each call runs it);
- the bodies, each a function kept in a table (a Lua 5.1 function holds at most
  200 locals; fifty more beside the prelude's would crowd them);
- one registered function per script and per variant writing no job events:
  it sets ``KEYS``, ``ARGV`` and ``EV``, calls ``start`` and runs the body.

The functions of scripts that never write are flagged ``no-writes`` (the server
then runs them when over ``maxmemory``, as it does such scripts); the others
have no flags: they write, and reach only the keys of their declared keys'
slot (all under one queue's prefix, or the worker registry's tag), which a
cluster checks.

The library's name carries a hash of its text, and so do the function names,
which are server-wide: two asyncq versions on one server load two libraries
side by side.
"""

from __future__ import annotations

import functools
import hashlib
from typing import NamedTuple

from .scripts import BODIES, PRELUDE

__all__ = ["Library", "library"]

#: the prelude's last line, which a script runs and a library function calls instead
_START = "start(KEYS[1])\n"
#: stands for the library's name while its text is hashed
_NAME = "@NAME@"


class Library(NamedTuple):
    """The text ``FUNCTION LOAD`` takes, and the name of each script's function."""

    name: str
    text: str
    #: script name (``<name>`` and ``<name>:quiet``, as in ``SCRIPTS``) -> function name
    functions: dict[str, str]


def library() -> Library:
    """The library of every script defined so far (made again only once more were)."""
    return _make(len(BODIES))


@functools.cache
def _make(count: int) -> Library:
    if not PRELUDE.endswith(_START):
        raise AssertionError(f"prelude.lua must end with {_START!r}")
    names: dict[str, str] = {}
    parts = [f"#!lua name={_NAME}\n", "local KEYS, ARGV\n", PRELUDE.removesuffix(_START)]
    parts.append("local BODIES = {}\n")
    for i, (body, _) in enumerate(BODIES.values(), start=1):
        parts.append(f"BODIES[{i}] = function()\n{body}\nend\n")
    parts.append(_ENTRY)
    for i, (name, (_, reads)) in enumerate(BODIES.items(), start=1):
        flags = ", flags = {'no-writes'}" if reads else ""
        for script, events in ((name, "true"), (f"{name}:quiet", "false")):
            names[script] = f"{_NAME}_{script.replace(':', '_')}"
            parts.append(
                f"redis.register_function{{function_name = '{names[script]}', "
                f"callback = entry(BODIES[{i}], {events}){flags}}}\n"
            )
    if len(set(names.values())) != len(names):
        raise AssertionError("two scripts' functions have one name")
    text = "".join(parts)
    name = f"asyncq_{hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:12]}"
    functions = {script: function.replace(_NAME, name) for script, function in names.items()}
    return Library(name, text.replace(_NAME, name), functions)


_ENTRY = """
local function entry(body, events)
  return function(keys, args)
    KEYS, ARGV, EV = keys, args, events
    start(keys[1])
    return body()
  end
end
"""
