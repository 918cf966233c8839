"""Every sample of the documentation runs, so none can rot (see ``tests/_docs.py``).

Each page is one test: its Python blocks run in order in one namespace, its
shell commands in one directory, against the loopback Redis and PostgreSQL
where a sample names them.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import shlex
import subprocess
import sys
import types
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from _docs import PAGES, ROOT, TALLY, Sample, commands, samples
from conftest import IN_CI

#: Seconds one sample (a block, a command) may take.
SAMPLE_TIMEOUT = 60


def _count(config: pytest.Config, what: str, n: int = 1) -> None:
    tally = config.stash.setdefault(TALLY, {})
    tally[what] = tally.get(what, 0) + n


async def _bounded(step: Callable[[], Awaitable[Any]]) -> None:
    with anyio.fail_after(SAMPLE_TIMEOUT):
        await step()


def _require_imports(sample: Sample) -> None:
    """Skip a sample whose imports are not installed, with what to install; in CI, run it."""
    if IN_CI:
        return  # CI installs requirements-dev.txt: a missing module there is a failure
    for node in ast.walk(ast.parse(sample.source)):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        for name in names:
            try:
                found = importlib.util.find_spec(name)
            except ModuleNotFoundError:
                found = None
            if found is None:
                pytest.skip(f"{sample.where} imports {name}: pip install -r requirements-dev.txt")


def _awaits(node: ast.AST) -> bool:
    """Whether a top-level statement awaits (outside the functions it defines)."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
        return False
    if isinstance(node, ast.Await | ast.AsyncWith | ast.AsyncFor):
        return True
    return any(_awaits(child) for child in ast.iter_child_nodes(node))


class Reader:
    """Follows one page: a namespace, a directory, a shell environment."""

    def __init__(self, page: Path, directory: Path, portal: BlockingPortal) -> None:
        self.page = page
        self.directory = directory
        self.portal = portal
        name = "docs_" + page.stem.replace("-", "_")
        self.module = types.ModuleType(name)
        self.module.__dict__["__file__"] = str(page)
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(directory), str(ROOT)]),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self.env.pop("ASYNCQ_BACKEND", None)
        self.background: list[subprocess.Popen[bytes]] = []

    def python(self, sample: Sample) -> None:
        _require_imports(sample)
        if sample.file is not None:
            path = self.directory / sample.file
            path.parent.mkdir(parents=True, exist_ok=True)
            (path.parent / "__init__.py").touch()
            path.write_text(sample.source, encoding="utf-8")
        if "subprocess" in sample.run_with:
            script = self.directory / f"sample_{sample.line}.py"
            script.write_text(sample.source, encoding="utf-8")
            self.run([sys.executable, str(script)], sample.where, 0)
            return
        namespace = self.module.__dict__
        if "isolated" in sample.run_with:
            namespace = dict(namespace)
        before = dict(namespace)
        # blank lines first, so a traceback names the page's own line
        tree = ast.parse("\n" * sample.line + sample.source, str(self.page))
        if "worker" in sample.run_with:
            # the statements before the first await define the app the worker runs
            first = next(i for i, node in enumerate(tree.body) if _awaits(node))
            exec(self._compile(tree.body[:first]), namespace)
            tree.body = tree.body[first:]
        code = self._compile(tree.body)
        if code.co_flags & inspect.CO_COROUTINE:
            self.portal.call(_bounded, lambda: self._awaited(code, namespace, sample))
        else:
            assert "worker" not in sample.run_with, f"{sample.where}: a worker needs an await"
            exec(code, namespace)
        for name, test in list(namespace.items()):
            # a test the sample defines runs, unless it takes pytest's fixtures
            if (
                name.startswith("test_")
                and before.get(name) is not test
                and callable(test)
                and not inspect.signature(test).parameters
            ):
                if inspect.iscoroutinefunction(test):
                    self.portal.call(_bounded, test)
                else:
                    test()

    def _compile(self, body: list[ast.stmt]) -> types.CodeType:
        module = ast.Module(body=body, type_ignores=[])
        return compile(module, str(self.page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)

    async def _awaited(
        self, code: types.CodeType, namespace: dict[str, Any], sample: Sample
    ) -> None:
        if "worker" in sample.run_with:
            async with namespace["app"].worker():
                await eval(code, namespace)
        else:
            await eval(code, namespace)

    def shell(self, sample: Sample) -> tuple[int, int]:
        ran = skipped = 0
        for command, status in commands(sample):
            argv = shlex.split(command)
            if argv[:2] == ["pip", "install"]:
                skipped += 1
                continue
            if argv[0] == "export":
                key, _, value = argv[1].partition("=")
                self.env[key] = value
                continue
            background = argv[-1] == "&"
            if background:
                argv.pop()
            if argv[0] == "asyncq":
                argv = [sys.executable, "-m", "asyncq", *argv[1:]]
                if argv[3:4] == ["run"] and "burst" in sample.run_with:
                    argv.append("--burst")
                background = background or (
                    argv[3:4] == ["run"] and "background" in sample.run_with
                )
            elif argv[0] in {"python", "python3"}:
                argv[0] = sys.executable
            if background:
                self.background.append(subprocess.Popen(argv, cwd=self.directory, env=self.env))
                ran += 1
                continue
            self.run(argv, f"{sample.where}: `{command}`", status)
            ran += 1
        return ran, skipped

    def run(self, argv: list[str], what: str, status: int) -> None:
        """Run a command in the page's directory; it must end with ``status``."""
        done = subprocess.run(
            argv,
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            timeout=SAMPLE_TIMEOUT,
            check=False,
        )
        assert done.returncode == status, (
            f"{what} exited {done.returncode}, not {status}\n"
            f"{done.stdout.decode(errors='replace')}{done.stderr.decode(errors='replace')}"
        )

    def stop(self) -> None:
        for process in self.background:
            process.terminate()
            process.wait(timeout=SAMPLE_TIMEOUT)


@pytest.fixture
def reader(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Reader]:
    page: Path = request.param
    monkeypatch.chdir(tmp_path)
    # what a reader's default is (./asyncq.db), said aloud: under pytest, asyncq's
    # plugin refuses the silent default; the page's commands get the default itself
    monkeypatch.setenv("ASYNCQ_BACKEND", f"sqlite:///{tmp_path / 'asyncq.db'}")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    with start_blocking_portal() as portal:
        reader = Reader(page, tmp_path, portal)
        monkeypatch.setitem(sys.modules, reader.module.__name__, reader.module)
        try:
            yield reader
        finally:
            reader.stop()


@pytest.mark.parametrize("reader", PAGES, ids=[p.name for p in PAGES], indirect=True)
def test_every_sample_of_the_page_runs(reader: Reader, request: pytest.FixtureRequest) -> None:
    for sample in samples(reader.page):
        if sample.skip is not None:
            _count(request.config, "skipped")
            continue
        try:
            if sample.kind == "python":
                reader.python(sample)
            else:
                ran, skipped = reader.shell(sample)
                _count(request.config, "commands run", ran)
                _count(request.config, "commands skipped (pip install)", skipped)
        except BaseException as exc:
            exc.add_note(f"in the sample at {sample.where}")
            raise
        _count(request.config, "ran")


def test_most_samples_run() -> None:
    found = [sample for page in PAGES for sample in samples(page)]
    skipped = [sample for sample in found if sample.skip is not None]
    assert len(found) > 30
    # fragments (a decorator, a view of your project) are marked; whole samples run
    assert len(skipped) <= len(found) * 2 // 5, [s.where for s in skipped]


def test_a_directive_steers_the_block_below_it(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- not-run: needs a cloud account -->\n```bash\naws s3 ls\n```\n\n"
        "<!-- run-with: worker, isolated -->\n```python\n# shop/jobs.py\nx = 1\n```\n"
        "```console\n$ asyncq purge a:app  # no --yes\nError: refusing\n[exit 2]\n$ true\n```\n"
        "```text\nnot a sample\n```\n",
        encoding="utf-8",
    )
    skipped, python, console = samples(page)
    assert skipped.skip == "needs a cloud account"
    assert python.run_with == {"worker", "isolated"}
    assert (python.file, python.line) == ("shop/jobs.py", 7)
    assert commands(console) == [("asyncq purge a:app", 2), ("true", 0)]
