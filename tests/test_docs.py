"""Every sample of the documentation runs, so none can rot (see ``tests/_docs.py``).

Each page is one test: its Python blocks run in order in one namespace, its
shell commands in one directory, against the loopback Redis and PostgreSQL
where a sample names them.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import inspect
import io
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import types
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, redirect_stdout, suppress
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from _docs import (
    FIXTURES,
    PAGES,
    ROOT,
    TALLY,
    Command,
    Sample,
    Serve,
    commands,
    learn_ids,
    samples,
)
from asyncq import App
from conftest import IN_CI

#: Seconds one sample (a block, a command) may take, waits for a server included.
SAMPLE_TIMEOUT = 60

#: Runs files one after the other in one namespace, as one program: the
#: ``given`` files, a ``subprocess`` block, its ``then`` files.
_RUN_FILES = """\
import sys
namespace = {"__name__": "__main__"}
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as file:
        exec(compile(file.read(), path, "exec"), namespace)
"""


def _count(config: pytest.Config, what: str, n: int = 1) -> None:
    tally = config.stash.setdefault(TALLY, {})
    tally[what] = tally.get(what, 0) + n


async def _bounded(step: Callable[[], Awaitable[Any]]) -> None:
    with anyio.fail_after(SAMPLE_TIMEOUT):
        await step()


def _require_imports(source: str, where: str) -> None:
    """Skip a sample whose imports are not installed, with what to install; in CI, run it."""
    if IN_CI:
        return  # CI installs requirements-dev.txt: a missing module there is a failure
    for node in ast.walk(ast.parse(source)):
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
                pytest.skip(f"{where} imports {name}: pip install -r requirements-dev.txt")


def _require_program(name: str, where: str) -> None:
    """Skip a command whose program is not installed; in CI, fail."""
    if shutil.which(name) is None:
        message = f"{where} runs {name}, which is not installed"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def _awaits(node: ast.AST) -> bool:
    """Whether a top-level statement awaits (outside the functions it defines)."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
        return False
    if isinstance(node, ast.Await | ast.AsyncWith | ast.AsyncFor):
        return True
    return any(_awaits(child) for child in ast.iter_child_nodes(node))


def _defines(node: ast.stmt) -> bool:
    """Whether a statement only imports or defines (the head of a blocking block)."""
    definitions = ast.Import | ast.ImportFrom | ast.FunctionDef | ast.AsyncFunctionDef
    return isinstance(node, definitions | ast.ClassDef)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _extras() -> set[str]:
    """The extras asyncq declares, from this checkout's ``pyproject.toml``."""
    with (ROOT / "pyproject.toml").open("rb") as file:
        project = tomllib.load(file)["project"]
    return set(project.get("optional-dependencies", {}))


def _check_pip_install(argv: list[str], what: str) -> None:
    """What ``pip install`` names exists: a requirements file, asyncq's extras, a distribution."""
    words = iter(argv[2:])
    for word in words:
        if word in {"-r", "--requirement"}:
            file = next(words)
            assert (ROOT / file).is_file(), f"{what}: no {file} in the checkout"
        elif word in {"-e", "--editable"}:
            assert next(words) == ".", f"{what}: an editable install of what?"
        elif word.startswith("-"):
            continue
        else:
            name, _, extras = word.partition("[")
            if name == "asyncq":
                wanted = {e.strip() for e in extras.rstrip("]").split(",") if e.strip()}
                assert wanted <= _extras(), f"{what}: asyncq has no extra {wanted - _extras()}"
            else:
                try:
                    importlib.metadata.distribution(name)
                except importlib.metadata.PackageNotFoundError:
                    pytest.fail(f"{what}: {name} is not among the test requirements")


class _Watched:
    """A running command whose output is read as it comes, to wait for a line."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_until_ready(self, serve: Serve, port: int | None, what: str) -> None:
        """Wait for the output ``serve`` asks for, then for the port; fail on exit or timeout."""
        deadline = time.monotonic() + SAMPLE_TIMEOUT
        with self.changed:
            while not serve.ready(self.lines):
                assert self.process.poll() is None or self.reader.is_alive(), (
                    f"{what} exited {self.process.returncode} before it was ready\n{self.output}"
                )
                left = deadline - time.monotonic()
                assert left > 0, f"{what}: no line matching {serve.until!r}\n{self.output}"
                self.changed.wait(left)
        # Nothing tells when a port opens: ask it, as a readiness probe does.
        while port is not None and not _accepts(port):
            assert self.process.poll() is None, (
                f"{what} exited {self.process.returncode} before port {port} opened\n{self.output}"
            )
            assert time.monotonic() < deadline, f"{what}: port {port} never opened\n{self.output}"
            time.sleep(0.05)

    def stop(self, how: signal.Signals) -> int:
        if self.process.poll() is None:
            self.process.send_signal(how)
        try:
            status = self.process.wait(timeout=SAMPLE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        self.reader.join(timeout=SAMPLE_TIMEOUT)
        assert self.process.stdout is not None
        self.process.stdout.close()
        return status


class _PrintedLines(io.TextIOBase):
    """``sys.stdout`` for a serving Python block: sets ``ready`` once ``serve`` is satisfied."""

    def __init__(self, serve: Serve) -> None:
        self.serve = serve
        self.text = ""
        self.ready = anyio.Event()

    def write(self, text: str) -> int:
        self.text += text
        if self.serve.ready(self.text.splitlines()):
            self.ready.set()
        return len(text)


class Reader:
    """Follows one page: a namespace, a directory, a shell environment."""

    def __init__(
        self,
        page: Path,
        directory: Path,
        portal: BlockingPortal,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        self.page = page
        self.directory = directory
        self.portal = portal
        self.monkeypatch = monkeypatch
        name = "docs_" + page.stem.replace("-", "_")
        self.module = types.ModuleType(name)
        self.module.__dict__["__file__"] = str(page)
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(directory), str(ROOT), str(FIXTURES)]),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        self.env.pop("ASYNCQ_BACKEND", None)
        self.background: list[subprocess.Popen[bytes] | _Watched] = []
        #: A transcript's job ids, and the ids the commands printed here in their place.
        self.ids: dict[str, str] = {}
        self.namespaces: list[dict[str, Any]] = [self.module.__dict__]

    # -- Python blocks ---------------------------------------------------------------

    def python(self, sample: Sample) -> None:
        _require_imports(sample.source, sample.where)
        fixtures = [FIXTURES / f"{name}.py" for name in sample.given + sample.then]
        for path in fixtures:
            _require_imports(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
        if sample.file is not None:
            path = self.directory / sample.file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(sample.source, encoding="utf-8")
        if "pytest" in sample.run_with:
            self._pytest(sample)
            return
        if "subprocess" in sample.run_with:
            script = self.directory / f"sample_{sample.line}.py"
            script.write_text(sample.source, encoding="utf-8")
            given = [FIXTURES / f"{name}.py" for name in sample.given]
            then = [FIXTURES / f"{name}.py" for name in sample.then]
            files = [str(path) for path in [*given, script, *then]]
            self.run([[sys.executable, "-c", _RUN_FILES, *files]], sample.where, 0)
            return
        namespace = self.module.__dict__
        if "isolated" in sample.run_with:
            namespace = dict(namespace)
            self.namespaces.append(namespace)
        for name in sample.given:
            self._fixture(name, namespace)
        before = dict(namespace)
        # blank lines first, so a traceback names the page's own line
        tree = ast.parse("\n" * sample.line + sample.source, str(self.page))
        if "worker" in sample.run_with:
            # the statements before the first await (in a blocking block, its leading
            # imports and definitions) define the app the worker runs
            awaits = [i for i, node in enumerate(tree.body) if _awaits(node)]
            heads = [i for i, node in enumerate(tree.body) if not _defines(node)]
            first = awaits[0] if awaits else heads[0] if heads else len(tree.body)
            exec(self._compile(tree.body[:first]), namespace)
            tree.body = tree.body[first:]
        code = self._compile(tree.body)
        if code.co_flags & inspect.CO_COROUTINE:
            self.portal.call(_bounded, lambda: self._awaited(code, namespace, sample))
        elif "worker" in sample.run_with:
            worker = namespace["app"].worker()
            with self.portal.wrap_async_context_manager(worker):
                exec(code, namespace)
        else:
            assert sample.serve is None, f"{sample.where}: a serving block needs an await"
            exec(code, namespace)
        for name in sample.then:
            self._fixture(name, namespace)
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

    def _fixture(self, name: str, namespace: dict[str, Any]) -> None:
        """Run ``tests/docs_fixtures/NAME.py`` in ``namespace``, awaits included."""
        path = FIXTURES / f"{name}.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        code = compile(tree, str(path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        if code.co_flags & inspect.CO_COROUTINE:
            self.portal.call(_bounded, lambda: eval(code, namespace))
        else:
            exec(code, namespace)

    def _compile(self, body: list[ast.stmt]) -> types.CodeType:
        module = ast.Module(body=body, type_ignores=[])
        return compile(module, str(self.page), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)

    async def _awaited(
        self, code: types.CodeType, namespace: dict[str, Any], sample: Sample
    ) -> None:
        async with AsyncExitStack() as stack:
            if "worker" in sample.run_with:
                await stack.enter_async_context(namespace["app"].worker())
            if sample.serve is None:
                await eval(code, namespace)
            else:
                await self._served(code, namespace, sample.serve, sample.where)

    async def _served(
        self, code: types.CodeType, namespace: dict[str, Any], serve: Serve, where: str
    ) -> None:
        """Run a block that serves for ever until what it prints says it served; then stop it."""
        printed = _PrintedLines(serve)
        ended = False

        async def block() -> None:
            nonlocal ended
            await eval(code, namespace)
            ended = True
            printed.ready.set()

        with redirect_stdout(printed):
            async with anyio.create_task_group() as group:
                group.start_soon(block)
                await printed.ready.wait()
                group.cancel_scope.cancel()
        assert not ended, f"{where} ended before printing {serve.until!r}:\n{printed.text}"
        sys.stdout.write(printed.text)

    def _pytest(self, sample: Sample) -> None:
        """Run a test module with pytest in the page's directory: every test must pass."""
        name = sample.file or f"test_{self.page.stem.replace('-', '_')}_{sample.line}.py"
        path = self.directory / name
        path.write_text(sample.source, encoding="utf-8")
        report = self.directory / f"report_{sample.line}.xml"
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        argv += ["-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function"]
        argv += [f"--junitxml={report}", "--rootdir", str(self.directory)]
        for plugin in sample.given:
            argv += ["-p", plugin]
        self.run([[*argv, name]], sample.where, 0)
        suite = ElementTree.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite[0]
        ran, skipped = int(suite.get("tests", "0")), int(suite.get("skipped", "0"))
        assert ran > 0, f"{sample.where}: pytest found no test"
        assert skipped == 0, f"{sample.where}: {skipped} of its {ran} tests skipped"

    # -- shell blocks ----------------------------------------------------------------

    def shell(self, sample: Sample) -> tuple[int, int]:
        ran = checked = 0
        serve = sample.serve
        steps = commands(sample)
        port = _free_port() if serve is not None and serve.port is not None else None
        named = (
            serve is not None
            and serve.port is not None
            and any(re.search(rf"(?<!\d){serve.port}(?!\d)", step.text) for step in steps)
        )
        server: _Watched | None = None
        served = False
        for step in steps:
            text = step.text
            for shown, printed in self.ids.items():
                text = text.replace(shown, printed)
            if port is not None:
                assert serve is not None
                assert serve.port is not None
                text = re.sub(rf"(?<!\d){serve.port}(?!\d)", str(port), text)
            what = f"{sample.where}: `{step.text}`"
            argv = shlex.split(text)
            if argv[:2] == ["pip", "install"]:
                _check_pip_install(argv, what)
                checked += 1
                continue
            if argv[0] == "export":
                key, _, value = argv[1].partition("=")
                self.env[key] = value
                self.monkeypatch.setenv(key, value)  # for the page's Python blocks too
                continue
            background = argv[-1] == "&"
            if background:
                argv.pop()
            stages = self._stages(argv, sample, what)
            first = stages[0]
            background = background or (first[3:4] == ["run"] and "background" in sample.run_with)
            ran += 1
            if serve is not None and not served:
                served = True
                if port is not None and not named:
                    first += ["--port", str(port)]
                server = _Watched(first, self.directory, self.env)
                server.wait_until_ready(serve, port, what)
                if background:
                    self.background.append(server)
                    server = None
                continue
            if background:
                self.background.append(subprocess.Popen(first, cwd=self.directory, env=self.env))
                continue
            printed = self.run(stages, what, step.status)
            self.ids.update(learn_ids(step.output, printed))
        if server is not None:
            assert serve is not None
            status = server.stop(signal.Signals[serve.stop])
            assert status == serve.exit, (
                f"{sample.where}: stopped with {serve.stop}, it exited {status}, "
                f"not {serve.exit}\n{server.output}"
            )
        return ran, checked

    def _stages(self, argv: list[str], sample: Sample, what: str) -> list[list[str]]:
        """A command's programs, piped one into the next, as this interpreter runs them."""
        stages: list[list[str]] = [[]]
        for word in argv:
            if word == "|":
                stages.append([])
            else:
                stages[-1].append(self._substitute(word, what))
        for stage in stages:
            if stage[0] == "asyncq":
                stage[:1] = [sys.executable, "-m", "asyncq"]
                if stage[3:4] == ["run"] and "burst" in sample.run_with:
                    stage.append("--burst")
            elif stage[0] in {"python", "python3"}:
                stage[0] = sys.executable
            else:
                _require_program(stage[0], what)
        return stages

    def _substitute(self, word: str, what: str) -> str:
        """``$(COMMAND)`` in a word: what COMMAND prints, as a shell would put it."""

        def output(match: re.Match[str]) -> str:
            inner = shlex.split(match[1])
            _require_program(inner[0], what)
            return self.run([inner], what, 0).strip()

        return re.sub(r"\$\(([^()]*)\)", output, word)

    def run(self, stages: list[list[str]], what: str, status: int) -> str:
        """Run commands piped one into the next in the page's directory; return what they print.

        The last must end with ``status``, the others with 0.
        """
        with tempfile.TemporaryFile() as errors:
            processes: list[subprocess.Popen[bytes]] = []
            for argv in stages:
                previous = processes[-1].stdout if processes else subprocess.DEVNULL
                processes.append(
                    subprocess.Popen(
                        argv,
                        cwd=self.directory,
                        env=self.env,
                        stdin=previous,
                        stdout=subprocess.PIPE,
                        stderr=errors,
                    )
                )
                if previous is not subprocess.DEVNULL:
                    assert previous is not None
                    previous.close()  # the next one holds it: the writer sees it close
            try:
                out, _ = processes[-1].communicate(timeout=SAMPLE_TIMEOUT)
                statuses = [process.wait(timeout=SAMPLE_TIMEOUT) for process in processes]
            finally:
                for process in processes:
                    if process.poll() is None:
                        process.kill()
            errors.seek(0)
            printed = out.decode(errors="replace")
            wanted = [0] * (len(stages) - 1) + [status]
            assert statuses == wanted, (
                f"{what} exited {statuses[-1] if len(statuses) == 1 else statuses}, "
                f"not {status}\n{printed}{errors.read().decode(errors='replace')}"
            )
        return printed

    # -- the end of the page ---------------------------------------------------------

    def stop(self) -> None:
        for process in self.background:
            if isinstance(process, _Watched):
                process.stop(signal.SIGTERM)
            else:
                process.terminate()
                process.wait(timeout=SAMPLE_TIMEOUT)
        # the page's modules (its shop package, the fixtures it imported) go, with the
        # background loops of their apps' `app.sync`, so the next page imports its own
        ours = (str(self.directory), str(FIXTURES))
        gone = [
            name
            for name, module in list(sys.modules.items())
            if any(str(where).startswith(ours) for where in _locations(module))
        ]
        scopes = [*self.namespaces, *(vars(sys.modules[name]) for name in gone)]
        for scope in scopes:
            for value in list(scope.values()):
                if isinstance(value, App) and value.sync.running:
                    value.sync.close()
        for name in gone:
            del sys.modules[name]


def _locations(module: types.ModuleType) -> list[str]:
    """Where a module's code lives: its file, or a namespace package's directories."""
    found = [getattr(module, "__file__", None) or ""]
    with suppress(Exception):  # a module whose __path__ is not a list of paths
        found += list(getattr(module, "__path__", None) or [])
    return found


@pytest.fixture
def reader(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Reader]:
    page: Path = request.param
    monkeypatch.chdir(tmp_path)
    # what a reader's default is (./asyncq.db), said aloud: under pytest, asyncq's
    # plugin refuses the silent default; the page's commands get the default itself
    monkeypatch.setenv("ASYNCQ_BACKEND", f"sqlite:///{tmp_path / 'asyncq.db'}")
    monkeypatch.syspath_prepend(str(FIXTURES))
    monkeypatch.syspath_prepend(str(tmp_path))  # first: a page's own shop comes first
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    with start_blocking_portal() as portal:
        reader = Reader(page, tmp_path, portal, monkeypatch)
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
                ran, checked = reader.shell(sample)
                _count(request.config, "commands run", ran)
                _count(request.config, "pip install checked (not run)", checked)
        except BaseException as exc:
            exc.add_note(f"in the sample at {sample.where}")
            raise
        _count(request.config, "ran")


def test_most_samples_run() -> None:
    found = [sample for page in PAGES for sample in samples(page)]
    skipped = [sample for sample in found if sample.skip is not None]
    assert len(found) > 30
    # only what cannot run here (hours of benchmarks, the whole suite) is marked
    assert len(skipped) <= 4, [s.where for s in skipped]


def test_a_directive_steers_the_block_below_it(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- not-run: needs a cloud account -->\n```bash\naws s3 ls\n```\n\n"
        "<!-- run-with: worker, isolated -->\n```python\n# shop/jobs.py\nx = 1\n```\n"
        "```console\n$ asyncq purge a:app  # no --yes\nError: refusing\n[exit 2]\n$ true\n```\n"
        "```text\nnot a sample\n```\n"
        "<!-- given: your_app -->\n<!-- then: flask_checkout -->\n"
        '<!-- serve: until="ready( now)?" times=2 -->\n```python\nx = 2\n```\n'
        "<!-- serve: port=8080 stop=SIGTERM exit=3 -->\n```sh\nasyncq run a:app\n```\n",
        encoding="utf-8",
    )
    skipped, python, console, given, served = samples(page)
    assert skipped.skip == "needs a cloud account"
    assert python.run_with == {"worker", "isolated"}
    assert (python.file, python.line) == ("shop/jobs.py", 7)
    assert commands(console) == [
        Command("asyncq purge a:app", 2, ("Error: refusing",)),
        Command("true", 0, ()),
    ]
    assert (given.given, given.then) == (["your_app"], ["flask_checkout"])
    assert given.serve == Serve(until="ready( now)?", times=2)
    assert given.serve.ready(["ready", "not yet", "ready now"])
    assert not given.serve.ready(["ready"])
    assert served.serve == Serve(port=8080, stop="SIGTERM", exit=3)


def test_a_transcript_id_stands_for_the_one_printed_in_its_place() -> None:
    shown = (
        "enqueued job 01a210c0ebd8000092e88fdced73a8dd (send_receipt, queue 'emails', queued)",
        "2026-11-25 03:30:10  retrying  01a210c0ecc2000001e53df8e8bcba97",  # no such line
    )
    printed = (
        "enqueued job 0f00000000000000000000000000000a (send_receipt, queue 'emails', queued)\n"
        "enqueued job 0f00000000000000000000000000000b (other, queue 'emails', queued)\n"
    )
    assert learn_ids(shown, printed) == {
        "01a210c0ebd8000092e88fdced73a8dd": "0f00000000000000000000000000000a"
    }
