"""The getting-started guide, followed from a fresh virtual environment.

``tests/test_docs.py`` runs the guide's samples in the suite's environment;
this test installs the package, as the guide's first command does, into an
empty venv, writes the guide's first job to ``shop/jobs.py``, runs the worker
the guide runs and sends it a job with the command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _docs import ROOT, samples

pytestmark = pytest.mark.slow  # a venv and an install: about twenty seconds


def test_the_guide_works_in_a_fresh_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # `pip install asyncq`, from this checkout
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(ROOT)], check=True, timeout=300
    )
    guide = samples(ROOT / "docs" / "getting-started.md")
    first_job = next(s for s in guide if s.file == "shop/jobs.py")
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").touch()
    (tmp_path / "shop" / "jobs.py").write_text(first_job.source, encoding="utf-8")
    [run] = [s for s in guide if s.kind == "shell" and "asyncq run" in s.source]
    argv = run.source.split("#")[0].split()
    assert argv[:3] == ["asyncq", "run", "shop.jobs:app"]
    asyncq = str(venv / "bin" / "asyncq")
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "ASYNCQ_BACKEND"}}
    worker = subprocess.Popen([asyncq, *argv[1:]], cwd=tmp_path, env=env)
    try:
        payload = '{"order_id": "o-1", "cents": 500}'
        done = subprocess.run(
            [asyncq, "enqueue", "shop.jobs:app", "shop.jobs.charge", payload, "--wait"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"order_id": "o-1", "charged": 500}
    assert worker.returncode == 0
