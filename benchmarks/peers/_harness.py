"""The process protocol shared by every system's drivers: standard library only.

Both virtualenvs import this module (asyncq's and the peers'), so it must not
import asyncq, anyio or any peer.

A *worker process* (one of the ``scale`` scenario's N) speaks JSON lines on
stdout and reads plain commands on stdin:

1. it imports and connects, then prints ``{"event": "ready"}``;
2. it waits for ``go`` on stdin, then starts its system's worker;
3. every ``PROGRESS_EVERY`` seconds it prints ``{"event": "progress", "done": k,
   "last": t}`` if ``k`` changed (jobs whose function returned, and the
   wall-clock time of the latest one);
4. on ``stop`` (or when its worker ends by itself, as a burst worker does) it
   stops and prints ``{"event": "final", "done": k, "last": t, "peak_rss_mb": m,
   "cpu_s": c}`` (``ready`` carries ``cpu_s`` too: the run's CPU is the difference).

The orchestrating process starts the workers, waits until all are ready, says
``go`` to each (the timer starts there, after imports and connections), and
stops them once the ``done`` counts add up to the jobs it enqueued. The wall
time is from ``go`` to the latest ``last``: time.time() is one clock for every
process on the host.
"""

from __future__ import annotations

import json
import os
import queue
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

PROGRESS_EVERY = 0.02


class Counter:
    """Jobs done in this process; a job's last act is ``COUNTER.tick()``.

    A plain int and float, written from the event loop (or, for a peer whose
    async jobs run on one event-loop thread, from that thread): cheap enough
    for a no-op job. Jobs that run on a pool of threads call ``tick_locked()``.
    """

    def __init__(self) -> None:
        self.done = 0
        self.last = 0.0
        self._lock = threading.Lock()

    def tick(self) -> None:
        self.done += 1
        self.last = time.time()

    def tick_locked(self) -> None:
        """``tick()`` for jobs that run on many threads at once (thread-pool peers).

        ``done += 1`` is a read and a write: two threads can interleave them
        and lose a tick, and the drain would then wait forever for the last one.
        """
        with self._lock:
            self.done += 1
            self.last = time.time()

    def reset(self) -> None:
        self.done = 0
        self.last = 0.0


COUNTER = Counter()


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb(pid: int) -> float:
    """Another process's current RSS, from /proc (Linux)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


_EMIT_LOCK = threading.Lock()


def emit(record: dict[str, Any]) -> None:
    """One JSON line on stdout; a lock keeps the reporter thread's lines whole."""
    line = json.dumps(record) + "\n"
    with _EMIT_LOCK:
        sys.stdout.write(line)
        sys.stdout.flush()


# -- the worker process's side -------------------------------------------------------


class WorkerSide:
    """Stdin commands and stdout reports of one worker process.

    The system's driver calls ``ready()`` once connected, awaits ``go`` (a
    thread reads stdin, so the event loop stays free), runs its worker while a
    reporter prints progress, and calls ``final()`` last.
    """

    def __init__(self) -> None:
        self.go = threading.Event()
        self.stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        for line in sys.stdin:
            command = line.strip()
            if command == "go":
                self.go.set()
            elif command == "stop":
                self.stop.set()
        # The orchestrator went away: stop rather than run forever.
        self.go.set()
        self.stop.set()

    def ready(self) -> None:
        self._reader.start()
        emit({"event": "ready", "pid": os.getpid(), "cpu_s": time.process_time()})

    def start_reporter(self) -> None:
        """Report progress from a thread, so it works the same for every system."""

        def report() -> None:
            seen = -1
            while not self.stop.wait(PROGRESS_EVERY):
                if COUNTER.done != seen:
                    seen = COUNTER.done
                    emit({"event": "progress", "done": seen, "last": COUNTER.last})

        threading.Thread(target=report, daemon=True).start()

    def final(self) -> None:
        emit(
            {
                "event": "final",
                "done": COUNTER.done,
                "last": COUNTER.last,
                "peak_rss_mb": peak_rss_mb(),
                "cpu_s": time.process_time(),
            }
        )


# -- the orchestrator's side ---------------------------------------------------------

#: the local store's process names: its CPU time shows when the store saturates
STORE_PROCESSES = frozenset({"redis-server", "valkey-server", "postgres"})


def store_cpu_seconds() -> float:
    """CPU seconds the local Redis or PostgreSQL processes have used so far.

    Each process's own time plus its reaped children's (PostgreSQL's postmaster
    inherits the time of the connection processes that exited), read from
    ``/proc``; 0.0 where there is no ``/proc``.
    """
    total = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0.0
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue  # gone since the listing
        comm_end = stat.rindex(")")
        if stat[stat.index("(") + 1 : comm_end] not in STORE_PROCESSES:
            continue
        # after "pid (comm) ": state ppid ... utime stime cutime cstime (fields 14-17)
        fields = stat[comm_end + 2 :].split()
        total += sum(int(x) for x in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


class WorkerFailed(RuntimeError):
    pass


def run_worker_processes(
    argv: Sequence[str],
    processes: int,
    expect: int,
    *,
    timeout: float = 600.0,
    cwd: str | None = None,
) -> dict[str, Any]:
    """Start ``processes`` copies of ``argv``, time them through ``expect`` jobs.

    Returns ``jobs_per_s``, ``seconds``, ``processes``, ``done`` per process,
    the largest ``peak_rss_mb`` of them, and where the CPU went: microseconds a
    job in the workers and in the store (Redis or PostgreSQL on this host), and
    ``cores_busy``, their sum over the wall time (on a 2-core machine, near 2.0
    means the machine, not the system, is the limit). The jobs are already enqueued.
    """
    events: queue.Queue[tuple[int, dict[str, Any] | None]] = queue.Queue()
    procs = [
        subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=cwd,
            bufsize=1,
        )
        for _ in range(processes)
    ]

    def pump(index: int, stream: IO[str]) -> None:
        for line in stream:
            line = line.strip()
            if line.startswith("{"):
                events.put((index, json.loads(line)))
        events.put((index, None))

    for index, proc in enumerate(procs):
        assert proc.stdout is not None
        threading.Thread(target=pump, args=(index, proc.stdout), daemon=True).start()

    def send(command: str) -> None:
        for proc in procs:
            try:
                assert proc.stdin is not None
                proc.stdin.write(command + "\n")
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass  # already ended (a burst worker that finished)

    done = [0] * processes
    last = [0.0] * processes
    rss = [0.0] * processes
    cpu = [0.0] * processes
    finished: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        ready = 0
        while ready < processes:
            index, event = events.get(timeout=max(0.1, deadline - time.monotonic()))
            if event is None:
                raise WorkerFailed(f"worker process {index} exited before it was ready")
            if event["event"] == "ready":
                ready += 1
                cpu[index] -= event.get("cpu_s", 0.0)
        store_before = store_cpu_seconds()
        started = time.time()
        send("go")
        stop_sent = False
        while len(finished) < processes:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerFailed(f"timed out with {sum(done)} of {expect} jobs done")
            try:
                index, event = events.get(timeout=remaining)
            except queue.Empty:
                continue
            if event is None:
                if index not in finished:
                    raise WorkerFailed(f"worker process {index} exited without a final report")
                continue
            if event["event"] in ("progress", "final"):
                done[index] = event["done"]
                last[index] = event["last"]
            if event["event"] == "final":
                rss[index] = event["peak_rss_mb"]
                cpu[index] += event.get("cpu_s", 0.0)
                finished.add(index)
            if not stop_sent and sum(done) >= expect:
                send("stop")
                stop_sent = True
            if not stop_sent and len(finished) == processes:
                break
    finally:
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    store_cpu = store_cpu_seconds() - store_before
    if sum(done) != expect:
        raise WorkerFailed(f"{sum(done)} of {expect} jobs done (per process: {done})")
    seconds = max(last) - started
    return {
        "jobs_per_s": expect / seconds,
        "seconds": seconds,
        "processes": processes,
        "done_per_process": done,
        "peak_rss_mb": max(rss),
        "worker_cpu_us_per_job": sum(cpu) / expect * 1e6,
        "store_cpu_us_per_job": store_cpu / expect * 1e6,
        "cores_busy": (sum(cpu) + store_cpu) / seconds,
    }
