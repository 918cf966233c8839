"""A worker's child process starts here: ``python -m asyncq._child_process`` (see ``_child``).

A module of its own, which nothing imports, so that running it as ``__main__``
does not load ``_child`` a second time.
"""

from ._child import main

if __name__ == "__main__":
    main()
