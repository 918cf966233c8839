"""Running the ``asyncq`` command in-process, for the tests of the command.

Those tests take the ``cli_isolated`` and ``write_module`` fixtures of
``conftest.py``: each runs in a directory of its own, where its app modules are.
"""

from __future__ import annotations

from collections.abc import Callable

from click.testing import CliRunner, Result

from asyncq.cli import main

#: The ``write_module`` fixture: it writes a module's source and returns its name.
WriteModule = Callable[[str], str]


def invoke(*args: str, stdin: bytes | None = None) -> Result:
    """Run ``asyncq ARGS...`` in-process, ``stdin`` on its standard input; stderr kept apart."""
    return CliRunner().invoke(main, list(args), input=stdin, prog_name="asyncq")
