"""Hostile text and bad records never reach the operator's terminal raw, nor as a traceback.

Names, ids, keys and error messages from the store, and what the operator typed,
are printed with the characters a terminal acts on escaped (``printable``), while
``--json`` keeps the real values. Bad input to any verb is one ``Error:`` line and
exit 2; a record the store cannot read is shown as its ``<unreadable>`` stand-in,
and one a store hands over that the CLI cannot show is one ``Error:`` line naming
the job and exit 1. The store is a SQLite file whose rows the tests rewrite with
``sqlite3``, as another program or a damaged disk could.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import msgspec
import pytest
from click.testing import Result

from _cli import WriteModule, invoke
from asyncq.cli import EXIT_FAILED, EXIT_USAGE
from asyncq.cli._render import json_printable, printable

ROOT = Path(__file__).resolve().parents[1]

APP_MODULE = """
    import msgspec

    from asyncq import App


    class Resize(msgspec.Struct):
        image: str
        width: int


    app = App("hostile", backend="sqlite:///{db}")


    @app.job(schema=Resize, name="resize", max_attempts=1)
    async def resize(payload: Resize) -> int:
        if payload.width < 0:
            raise ValueError("bad width\\x1b[2J\\nError: forged line\\x1b]0;title\\x07")
        return payload.width


    @app.job(schema=dict, name="anything")
    async def anything(payload: dict) -> int:
        return len(payload)
"""

#: a payload the ``resize`` job takes
VALID = '{"image": "a.png", "width": 1}'
#: one of each kind of character a terminal acts on
HOSTILE = "a\x1b[2J\x1b[31mb\rc\nd\te\x00f\x7fg\x9bh\u202ei\u2066j"
#: what ``printable`` makes of it
ESCAPED = r"a\x1b[2J\x1b[31mb\rc\nd\te\x00f\x7fg\x9bh\u202ei\u2066j"
#: every character that must never reach the terminal raw
UNSAFE = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F)]}
UNSAFE |= {chr(c) for c in range(0x2066, 0x206A)} | {"\u2028", "\u2029"}


pytestmark = pytest.mark.usefixtures("cli_isolated")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "hostile.db"


@pytest.fixture
def app_path(write_module: WriteModule, db: Path) -> str:
    """``MODULE:APP`` of a fresh module in the test's directory, on its own SQLite file."""
    return f"{write_module(APP_MODULE.replace('{db}', str(db)))}:app"


def enqueue(app_path: str, payload: str = VALID) -> str:
    result = invoke("enqueue", app_path, "resize", payload, "--json")
    assert result.exit_code == 0, result.output
    job_id: str = json.loads(result.stdout)["id"]
    return job_id


def rewrite(db: Path, job_id: str, **columns: object) -> None:
    """Set columns of one job's row, as a damaged store or another program could."""
    with closing(sqlite3.connect(db)) as conn, conn:
        assignments = ", ".join(f"{column} = ?" for column in columns)
        conn.execute(
            f"UPDATE asyncq_jobs SET {assignments} WHERE id = ?",
            (*columns.values(), job_id),
        )
    conn.close()


def assert_terminal_safe(text: str) -> None:
    raw = sorted({char for char in text if char in UNSAFE} - {"\n"})
    assert not raw, (raw, text)


def assert_one_error(result: Result, code: int, *fragments: str) -> str:
    """Exit ``code``, no traceback, nothing on stdout, and one ``Error:`` line on stderr."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    assert_terminal_safe(result.stderr)
    return errors[0]


# -- printable ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b[2J", r"\x1b[2J"),
        ("a\r\n\tb", r"a\r\n\tb"),
        ("\x00\x07\x7f", r"\x00\x07\x7f"),
        ("\x85\x9b\x9f", r"\x85\x9b\x9f"),
        ("\u202a\u202b\u202c\u202d\u202e", r"\u202a\u202b\u202c\u202d\u202e"),
        ("\u2066\u2067\u2068\u2069", r"\u2066\u2067\u2068\u2069"),
        ("\u2028\u2029", r"\u2028\u2029"),
        ("\udcff\udc80", r"\xff\x80"),  # bytes of an argument that were not UTF-8
        ("\ud800", r"\ud800"),
        (HOSTILE, ESCAPED),
    ],
)
def test_printable_escapes_what_a_terminal_acts_on(text: str, shown: str) -> None:
    assert printable(text) == shown


@pytest.mark.parametrize(
    "text", ["", "send_receipt", "émails 日本語 ünïcode", r"C:\path\n", "a b", "€ ÿ \u00a0"]
)
def test_printable_leaves_ordinary_text_alone(text: str) -> None:
    assert printable(text) == text


def test_json_printable_keeps_the_values() -> None:
    value = {"k\u202e": ["\x7f\x9b\u2028", HOSTILE]}
    text = json_printable(msgspec.json.encode(value).decode())
    assert_terminal_safe(text)
    assert json.loads(text) == value


# -- names from the store ---------------------------------------------------------------------


def test_jobs_table_escapes_names_and_keeps_one_line_per_job(app_path: str, db: Path) -> None:
    job_id = enqueue(app_path)
    enqueue(app_path)
    rewrite(db, job_id, name=HOSTILE, queue=HOSTILE + "q", key=HOSTILE + "k")

    result = invoke("jobs", app_path)

    assert result.exit_code == 0, result.output
    assert_terminal_safe(result.stdout)
    lines = result.stdout.splitlines()
    assert len(lines) == 3, result.stdout  # the header and one line per job: no forged rows
    row = next(line for line in lines if line.startswith(job_id))
    assert ESCAPED in row
    assert ESCAPED + "q" in row


def test_jobs_json_keeps_the_real_values(app_path: str, db: Path) -> None:
    job_id = enqueue(app_path)
    rewrite(db, job_id, name=HOSTILE, queue=HOSTILE + "q", key=HOSTILE + "k")

    listed = invoke("jobs", app_path, "--json")
    shown = invoke("job", app_path, job_id, "--json")

    for result in (listed, shown):
        assert result.exit_code == 0, result.output
        assert_terminal_safe(result.stdout)
        assert len(result.stdout.splitlines()) == 1
    [job] = json.loads(listed.stdout)
    full = json.loads(shown.stdout)
    for record in (job, full):
        assert (record["name"], record["queue"], record["key"]) == (
            HOSTILE,
            HOSTILE + "q",
            HOSTILE + "k",
        )


def test_job_view_escapes_fields_payload_and_errors(app_path: str, db: Path) -> None:
    job_id = enqueue(app_path, '{"image": "x\\u001b[2J\\u007f\\u202e", "width": -1}')
    ran = invoke("run", app_path, "--burst")
    assert ran.exit_code == 0, ran.output
    rewrite(db, job_id, name=HOSTILE, key=HOSTILE + "k", worker=HOSTILE + "w")

    result = invoke("job", app_path, job_id)

    assert result.exit_code == 0, result.output
    assert_terminal_safe(result.stdout)
    out = result.stdout
    assert [ESCAPED] in [line.split()[1:] for line in out.splitlines() if "name " in line]
    assert ESCAPED + "k" in out
    # the payload block stays JSON: what JSON allows raw is written \uXXXX
    assert '"x\\u001b[2J\\u007f\\u202e"' in out
    # the error's message and its traceback: escaped, one line each, no forged "Error:" line
    assert r"ValueError: bad width\x1b[2J" in out
    assert not any(line.startswith("Error: forged") for line in out.splitlines())
    assert r"\x1b]0;title\x07" in out


def test_jobs_last_error_column_is_escaped(app_path: str) -> None:
    enqueue(app_path, '{"image": "a.png", "width": -1}')
    assert invoke("run", app_path, "--burst").exit_code == 0

    result = invoke("jobs", app_path, "--state", "dead")

    assert result.exit_code == 0, result.output
    assert_terminal_safe(result.stdout)
    assert len(result.stdout.splitlines()) == 2
    assert r"ValueError: bad width\x1b[2J" in result.stdout


def test_status_escapes_queue_names(app_path: str, db: Path) -> None:
    job_id = enqueue(app_path)
    rewrite(db, job_id, queue=HOSTILE)
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("INSERT INTO asyncq_queues (name, paused) VALUES (?, 1)", (HOSTILE,))
    conn.close()

    text = invoke("status", app_path)
    as_json = invoke("status", app_path, "--json")

    assert text.exit_code == 0, text.output
    assert_terminal_safe(text.stdout)
    assert any(line.startswith(ESCAPED) for line in text.stdout.splitlines())
    assert as_json.exit_code == 0, as_json.output
    assert_terminal_safe(as_json.stdout)
    queues = [q["queue"] for q in json.loads(as_json.stdout)["queues"]]
    assert HOSTILE in queues


def test_messages_escape_what_the_operator_typed(app_path: str) -> None:
    enqueue(app_path)

    result = invoke("jobs", app_path, "--after", HOSTILE)

    assert result.exit_code == 0, result.output
    assert_terminal_safe(result.stdout)
    assert result.stdout.strip() == f"no jobs after {ESCAPED}"


def test_cancel_messages_escape_names_from_the_store(app_path: str, db: Path) -> None:
    job_id = enqueue(app_path)
    rewrite(db, job_id, name=HOSTILE)

    result = invoke("cancel", app_path, job_id)

    assert result.exit_code == 0, result.output
    assert_terminal_safe(result.stdout)
    assert ESCAPED in result.stdout


def test_usage_errors_escape_what_the_operator_typed(app_path: str) -> None:
    result = invoke("jobs", app_path, HOSTILE, "b\nError: forged")

    assert result.exit_code == EXIT_USAGE
    assert_terminal_safe(result.stderr)
    assert not any(line.startswith("Error: forged") for line in result.stderr.splitlines())
    assert ESCAPED in result.stderr
    assert result.stderr.startswith("Usage: asyncq jobs")


def test_store_errors_are_escaped(app_path: str) -> None:
    """An unknown queue: its name comes back in the message, escaped."""
    result = invoke("pause", app_path, HOSTILE)
    assert_one_error(result, EXIT_USAGE, "unknown queue")


# -- bad input: one line, exit 2 --------------------------------------------------------------


def test_enqueue_refuses_an_argument_that_is_not_utf8_in_a_process(
    app_path: str, tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LC_ALL": "C.UTF-8"}
    env.pop("ASYNCQ_BACKEND", None)
    payload = b'{"image": "\xff\xfe", "width": 1}'
    command = [sys.executable, "-m", "asyncq", "enqueue", app_path, "resize", payload]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, timeout=60, check=False
    )
    stderr = done.stderr.decode()
    assert done.returncode == EXIT_USAGE, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert errors == [r"""Error: argument '{"image": "\xff\xfe", "width": 1}' is not valid UTF-8"""]
    assert done.stdout == b""


@pytest.mark.parametrize(
    "args",
    [
        ["enqueue", "resize", '{"image": "\udcff", "width": 1}'],
        ["enqueue", "resize", VALID, "--key", "k\udcff"],
        ["enqueue", "resize", VALID, "-q", "\udcff"],
        ["job", "\udcff"],
        ["jobs", "-n", "\udcff"],
        ["jobs", "--after", "\udcff"],
        ["cancel", "\udcff"],
        ["retry", "\udcff"],
        ["pause", "\udcff"],
    ],
)
def test_arguments_that_are_not_utf8_are_usage_errors(app_path: str, args: list[str]) -> None:
    verb, *rest = args
    result = invoke(verb, app_path, *rest)
    assert result.exit_code == EXIT_USAGE, result.output
    assert "Traceback" not in result.output
    assert r"is not valid UTF-8" in result.stderr
    assert r"\xff" in result.stderr
    assert_terminal_safe(result.stderr)


def test_enqueue_refuses_stdin_that_is_not_utf8(app_path: str) -> None:
    result = invoke("enqueue", app_path, "resize", "-", stdin=b'{"image": "\xff", "width": 1}')
    assert_one_error(result, EXIT_USAGE, "not valid UTF-8")


def test_enqueue_reads_utf8_stdin(app_path: str) -> None:
    result = invoke(
        "enqueue",
        app_path,
        "resize",
        "-",
        "--json",
        stdin='{"image": "é.png", "width": 1}'.encode(),
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["name"] == "resize"


@pytest.mark.parametrize(
    ("job", "document"),
    [
        ("anything", '{"a": ' * 5000 + "1" + "}" * 5000),
        ("anything", "[" * 5000 + "]" * 5000),
        ("resize", "[" * 5000 + "]" * 5000),
    ],
)
def test_enqueue_refuses_json_nested_too_deep(app_path: str, job: str, document: str) -> None:
    result = invoke("enqueue", app_path, job, document)
    assert_one_error(result, EXIT_USAGE, f"invalid payload for job {job!r}")
    assert invoke("jobs", app_path).stdout.strip() == "no jobs"


@pytest.mark.parametrize("document", ["[1]", '"text"', "3", "null", "true"])
def test_enqueue_refuses_json_that_is_not_an_object(app_path: str, document: str) -> None:
    for job in ("resize", "anything"):
        result = invoke("enqueue", app_path, job, document)
        assert_one_error(
            result, EXIT_USAGE, f"invalid payload for job {job!r}", "Expected `object`"
        )


@pytest.mark.parametrize(
    "args",
    [
        ["purge", "-s", "dead", "--older-than", "99999999999999999999d", "--yes"],
        ["purge", "-s", "dead", "--older-than", "1e300", "--yes"],
        ["purge", "-s", "dead", "--older-than", "nan", "--yes"],
        ["purge", "-s", "dead", "--older-than", "\x1b[2J", "--yes"],
        ["purge", "-s", "bogus\x1b[2J", "--older-than", "1d", "--yes"],
        ["enqueue", "resize", VALID, "--delay", "1e300"],
        ["enqueue", "resize", VALID, "--job-timeout", "5300w"],
        ["enqueue", "resize", VALID, "--priority", "99999999999999999999999"],
        ["enqueue", "resize", VALID, "--max-attempts", "99999999999999999999999"],
        ["enqueue", "resize", VALID, "--at", "\x1b[2J"],
        ["jobs", "--state", "\x1b[2J"],
        ["jobs", "--limit", "\x1b[2J"],
        ["status", "--interval", "-1"],
    ],
)
def test_hostile_option_values_are_usage_errors(app_path: str, args: list[str]) -> None:
    verb, *rest = args
    result = invoke(verb, app_path, *rest)
    assert result.exit_code == EXIT_USAGE, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    assert_terminal_safe(result.stderr)
    assert result.stderr.splitlines()[-1].startswith("Error: "), result.stderr


def test_a_duration_of_up_to_a_hundred_years_is_taken(app_path: str) -> None:
    result = invoke("purge", app_path, "-s", "dead", "--older-than", "5200w", "--yes")
    assert result.exit_code == 0, result.output
    assert "purged 0 job(s)" in result.stdout


# -- bad records: one line naming the job, exit 1 -------------------------------------------------


@pytest.mark.parametrize("column", ["enqueued_at", "progress", "attempts"])
@pytest.mark.parametrize(
    "verb", [["jobs"], ["jobs", "--json"], ["job", "{id}"], ["job", "{id}", "--json"]]
)
def test_a_record_of_the_wrong_type_names_the_job(
    app_path: str, db: Path, column: str, verb: list[str]
) -> None:
    enqueue(app_path)
    job_id = enqueue(app_path)
    rewrite(db, job_id, **{column: "\x1b[2Jgarbage"})
    args = [arg.replace("{id}", job_id) for arg in verb]

    result = invoke(args[0], app_path, *args[1:])

    # The store checks the types as it reads, and stands in for the record.
    assert result.exit_code == 0, result.output
    assert job_id in result.stdout
    assert "<unreadable>" in result.stdout
    assert_terminal_safe(result.stdout)


CARELESS_STORE = """
    import msgspec

    from asyncq import App, JobState
    from asyncq.backends.memory import MemoryBackend
    from asyncq._records import JobRecord

    JOB_ID = "01careless"


    def careless_record():
        # Built without a decode, so nothing checks the field types.
        return JobRecord(
            id=JOB_ID,
            name="resize\x1b[2J",
            queue="default",
            payload=b"{}",
            state=JobState.QUEUED,
            enqueued_at="\x1b[2Jgarbage",
        )


    class Careless(MemoryBackend):
        async def get(self, job_id):
            return careless_record()

        async def _list_jobs(self, query):
            return [careless_record()]


    app = App("careless", backend=Careless())
"""


@pytest.mark.parametrize(
    "verb", [["jobs"], ["jobs", "--json"], ["job", "{id}"], ["job", "{id}", "--json"]]
)
def test_a_record_a_store_hands_over_with_the_wrong_type_names_the_job(
    write_module: WriteModule, verb: list[str]
) -> None:
    """A store that checks nothing (none asyncq ships) makes a view fail: one line, exit 1."""
    app_path = f"{write_module(CARELESS_STORE)}:app"
    args = [arg.replace("{id}", "01careless") for arg in verb]

    result = invoke(args[0], app_path, *args[1:])

    line = assert_one_error(result, EXIT_FAILED, "job '01careless'", "cannot show")
    assert "unexpected" not in line


@pytest.mark.parametrize(
    "columns",
    [
        {"state": "bogus"},
        {"errors": b"\xc1\xc1\xc1", "error_count": 1},
        {"headers": b"\xc1\xc1"},
    ],
)
@pytest.mark.parametrize("verb", [["jobs"], ["job", "{id}"], ["job", "{id}", "--json"]])
def test_a_record_that_does_not_decode_is_shown_as_unreadable(
    app_path: str, db: Path, columns: dict[str, object], verb: list[str]
) -> None:
    job_id = enqueue(app_path)
    rewrite(db, job_id, **columns)
    args = [arg.replace("{id}", job_id) for arg in verb]

    result = invoke(args[0], app_path, *args[1:])

    # The store stands in for the record it cannot read: the operator sees the
    # job, named as unreadable, with the decoding error; nothing fails.
    assert result.exit_code == 0, result.output
    assert job_id in result.stdout
    assert "<unreadable>" in result.stdout
    assert_terminal_safe(result.stdout)
    if "--json" in verb:
        assert json.loads(result.stdout)["name"] == "<unreadable>"


def test_status_over_a_state_it_does_not_know_counts_it_as_dead(app_path: str, db: Path) -> None:
    enqueue(app_path)
    job_id = enqueue(app_path)
    rewrite(db, job_id, state="bogus\x1b[2J")

    for args in (["status"], ["status", "--json"]):
        result = invoke(args[0], app_path, *args[1:])
        assert result.exit_code == 0, result.output
        assert_terminal_safe(result.stdout)
    counts = json.loads(invoke("status", app_path, "--json").stdout)
    (queue,) = counts if isinstance(counts, list) else counts["queues"]
    assert queue["counts"]["dead"] == 1
    assert queue["counts"]["queued"] == 1


@pytest.mark.parametrize("payload", [b"\xc1\xc1\xc1", b"\x91" * 5000 + b"\x01"])
def test_a_payload_that_does_not_decode_is_shown_as_undecodable(
    app_path: str, db: Path, payload: bytes
) -> None:
    job_id = enqueue(app_path)
    rewrite(db, job_id, payload=payload)

    text = invoke("job", app_path, job_id)
    as_json = invoke("job", app_path, job_id, "--json")

    assert text.exit_code == 0, text.output
    assert "undecodable" in text.stdout
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["payload"] == {"undecodable": payload.hex()}


# -- run ----------------------------------------------------------------------------------------


def test_run_ends_an_unexpected_error_with_one_line_and_logs_its_traceback(
    write_module: WriteModule, db: Path
) -> None:
    name = write_module(f"""
        from contextlib import asynccontextmanager

        from asyncq import App


        @asynccontextmanager
        async def lifespan(app):
            raise RuntimeError("lifespan broke")
            yield


        app = App("broken", backend="sqlite:///{db}", lifespan=lifespan)


        @app.job(schema=int, name="noop")
        async def noop(payload: int) -> None:
            pass
    """)

    result = invoke("run", f"{name}:app", "--burst")

    assert result.exit_code == EXIT_FAILED, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == ["Error: unexpected RuntimeError: lifespan broke"]
    assert "Traceback" in result.stderr  # in the worker's log, above the error
    assert result.stderr.index("Traceback") < result.stderr.index("Error: ")
