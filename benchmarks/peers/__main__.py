"""``python -m benchmarks.peers setup``: the peers' virtualenv, from the pinned list.

The same as, from the repository root::

    python -m venv benchmarks/.venv-peers
    benchmarks/.venv-peers/bin/python -m pip install -r benchmarks/requirements-peers.txt
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from . import REQUIREMENTS, VENV, venv_python


def setup() -> int:
    if not venv_python().exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    python = str(venv_python())
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([python, "-m", "pip", "install", "-r", str(REQUIREMENTS)], check=True)
    print(f"peers installed in {VENV}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__)
    parser.add_argument("command", choices=["setup"])
    parser.parse_args(argv)
    return setup()


if __name__ == "__main__":
    raise SystemExit(main())
