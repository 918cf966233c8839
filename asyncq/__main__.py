"""``python -m asyncq`` is the ``asyncq`` command."""

from .cli import main

main(prog_name="asyncq")
