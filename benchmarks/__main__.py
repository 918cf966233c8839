"""Benchmark runner: ``python -m benchmarks --backend redis --scenario all --systems all``.

Every run of every scenario is a fresh subprocess, for asyncq as for the peers
(whose drivers run in their own virtualenv, see ``benchmarks/README.md``), so
that each reports its own peak RSS. Runs are interleaved (for each scenario,
for each run index, for each system) so a ratio holds while the machine
drifts. Each system's median run is reported as a JSON line (``--json FILE``
appends them), then one Markdown table: a column per system, a row per
scenario, and asyncq against the best peer.

``--smoke`` runs every scenario once with tiny N on the memory backend, asyncq
only, so CI proves the runner works without asserting any speed.
``--scenario soak`` (never part of ``all``) puts ``--soak-n`` jobs through one
asyncq worker process and samples its RSS.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio

from .asyncq_bench import ASYNCQ_ONLY, DEFAULT_URLS, SCENARIOS, run_on
from .peers import PEERS, venv_python

REPO = Path(__file__).resolve().parent.parent
SCALE = {"scale-1": 1, "scale-2": 2, "scale-4": 4}
DEFAULT_N = {**{name: n for name, (_, n) in SCENARIOS.items()}, **dict.fromkeys(SCALE, 10_000)}
ALL = [*SCENARIOS, *SCALE]
# asyncq's systems: the name in tables -> the event loop its processes run on
ASYNCQ = {"asyncq": "asyncio", "asyncq-uvloop": "uvloop"}
RUN_TIMEOUT = 900.0


def _key(result: dict[str, Any]) -> str:
    return "jobs_per_s" if "jobs_per_s" in result else "p50_ms"


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    key = _key(runs[0])
    ordered = sorted(runs, key=lambda r: r[key])
    median = dict(ordered[len(ordered) // 2])
    median["runs"] = [round(r[key], 3) for r in runs]
    return median


def _format(result: dict[str, Any] | None) -> str:
    if result is None:
        return "-"
    if "na" in result:
        return "n/a"
    if "error" in result:
        return "error"
    if "jobs_per_s" in result:
        return f"{result['jobs_per_s']:,.0f} jobs/s"
    return f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms"


def _cpu(result: dict[str, Any]) -> str:
    if "cores_busy" not in result:
        return "-"
    worker, store = result["worker_cpu_us_per_job"], result["store_cpu_us_per_job"]
    return f"{worker:.0f} + {store:.0f} ({result['cores_busy']:.2f})"


def _best(runs: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """The best of ``runs`` (system -> result): highest jobs/s, or lowest p50."""
    measured = [(system, r) for system, r in runs.items() if "jobs_per_s" in r or "p50_ms" in r]
    if not measured:
        return None
    if any("jobs_per_s" in r for _, r in measured):
        return max(measured, key=lambda item: item[1].get("jobs_per_s", 0.0))
    return min(measured, key=lambda item: item[1]["p50_ms"])


def _ratio(ours: dict[str, Any] | None, best: tuple[str, dict[str, Any]] | None) -> str:
    """asyncq against the best peer, as "how many times better" (>1: asyncq leads)."""
    if ours is None or best is None or _key(ours) not in ours or _key(ours) not in best[1]:
        return "-"
    if "jobs_per_s" in ours:
        return f"{ours['jobs_per_s'] / best[1]['jobs_per_s']:.2f}x"
    return f"{best[1]['p50_ms'] / ours['p50_ms']:.2f}x"


def _families(peers: list[str]) -> dict[str, list[str]]:
    """Each peer and the systems that are its configurations, in the order given."""
    families: dict[str, list[str]] = {}
    for system in peers:
        info = PEERS.get(system)
        families.setdefault(info.peer(system) if info else system, []).append(system)
    return families


# -- one run of one system -------------------------------------------------------------


def _child(scenario: str, backend: str, n: int, loop: str) -> dict[str, Any]:
    """asyncq's side of one run, in this (child) process, on the ``loop`` event loop."""
    url = DEFAULT_URLS.get(backend, backend)
    if scenario in SCALE:
        from .scale import scenario_scale

        return scenario_scale(backend, n, SCALE[scenario], loop)
    if scenario == "soak":
        from .soak import scenario_soak

        return scenario_soak(backend, n, loop)
    function, _ = SCENARIOS[scenario]
    return run_on(function, url, n, loop=loop)


def _last_json(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            parsed: dict[str, Any] = json.loads(line)
            return parsed
    msg = "no JSON line on stdout"
    raise ValueError(msg)


def _subprocess(argv: list[str]) -> dict[str, Any]:
    try:
        proc = subprocess.run(
            argv, cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {RUN_TIMEOUT:.0f} s"}
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return {"error": tail[0][:300]}
    try:
        return _last_json(proc.stdout)
    except ValueError as exc:
        return {"error": str(exc)}


def _backend_kind(backend: str) -> str:
    url = DEFAULT_URLS.get(backend, backend)
    scheme = url.partition("://")[0]
    if scheme.startswith(("redis", "valkey", "unix")):
        return "redis"
    if scheme.startswith("postgres"):
        return "postgres"
    return scheme


class _Namespace:
    """A run's Redis prefix or PostgreSQL schema for a peer, dropped afterwards."""

    def __init__(self, system: str, backend: str) -> None:
        self.name = f"bench_{system}_{uuid.uuid4().hex[:8]}"
        self.kind = _backend_kind(backend)
        self.url = DEFAULT_URLS.get(backend, backend)

    async def _create(self) -> None:
        if self.kind == "postgres":
            import asyncpg

            conn = await asyncpg.connect(self.url)
            try:
                await conn.execute(f'CREATE SCHEMA "{self.name}"')
            finally:
                await conn.close()

    async def _drop(self) -> None:
        if self.kind == "postgres":
            import asyncpg

            conn = await asyncpg.connect(self.url)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')
            finally:
                await conn.close()
        elif self.kind == "redis":
            from redis.asyncio import Redis

            client = Redis.from_url(self.url)
            try:
                batch = [key async for key in client.scan_iter(f"*{self.name}*", count=1000)]
                for start in range(0, len(batch), 500):
                    await client.unlink(*batch[start : start + 500])
            finally:
                await client.aclose()

    def __enter__(self) -> str:
        anyio.run(self._create)
        return self.name

    def __exit__(self, *exc: object) -> None:
        anyio.run(self._drop)


def run_once(system: str, scenario: str, backend: str, n: int) -> dict[str, Any]:
    if system in ASYNCQ:
        argv = [sys.executable, "-m", "benchmarks", "--child", scenario, "--backend", backend]
        return _subprocess([*argv, "--n", str(n), "--loop", ASYNCQ[system]])
    info = PEERS[system]
    if scenario in ASYNCQ_ONLY:
        return {"na": f"{scenario} is an asyncq-only scenario"}
    if _backend_kind(backend) not in info.backends:
        return {"na": f"{system} has no {_backend_kind(backend)} backend"}
    base, processes = ("scale", SCALE[scenario]) if scenario in SCALE else (scenario, 1)
    with _Namespace(system, backend) as namespace:
        return _subprocess(
            [
                str(venv_python()), "-m", info.module, base,
                "--url", DEFAULT_URLS.get(backend, backend), "--ns", namespace,
                "--n", str(n), "--processes", str(processes),
            ]
        )  # fmt: skip


# -- the session -----------------------------------------------------------------------


def _scenarios(text: str) -> Iterator[str]:
    for name in ALL if text == "all" else text.split(","):
        yield from SCALE if name == "scale" else [name]


def _systems(text: str, backend: str) -> list[str]:
    if text == "all":
        kind = _backend_kind(backend)
        return [*ASYNCQ, *(name for name, info in PEERS.items() if kind in info.backends)]
    return text.split(",")


def _record(system: str, backend: str, scenario: str, result: dict[str, Any]) -> dict[str, Any]:
    info = PEERS.get(system)
    return {
        "system": system,
        **({"peer": info.peer(system)} if info else {}),
        "backend": backend,
        "scenario": scenario,
        **result,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _emit(record: dict[str, Any], json_path: str | None) -> None:
    line = json.dumps(record)
    print(line, file=sys.stderr, flush=True)
    if json_path:
        with open(json_path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def _tables(
    backend: str, systems: list[str], results: dict[tuple[str, str], dict[str, Any]]
) -> str:
    scenarios = list(dict.fromkeys(s for _, s in results))
    peers = [s for s in systems if s not in ASYNCQ]
    ours = [s for s in systems if s in ASYNCQ] if peers else []
    head = ["scenario", *systems]
    if peers:
        head += ["best peer", *(f"{s} ÷ best peer" for s in ours)]
    lines = [f"**{backend}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes: list[str] = []
    for scenario in scenarios:
        cells = [scenario]
        for system in systems:
            result = results.get((system, scenario))
            cell = _format(result)
            if result is not None and ("na" in result or "error" in result):
                notes.append(f"{system} {scenario}: {result.get('na') or result.get('error')}")
                cell += f" [{len(notes)}]"
            cells.append(cell)
        if peers:
            best = _best({p: results[(p, scenario)] for p in peers if (p, scenario) in results})
            cells.append("-" if best is None else best[0])
            cells += [_ratio(results.get((s, scenario)), best) for s in ours]
        lines.append("| " + " | ".join(cells) + " |")
    families = _families(peers)
    if any(len(configs) > 1 for configs in families.values()):
        # A peer measured in two configurations: its better one, named, per scenario.
        lines += ["", "Each peer in its best configuration", ""]
        lines += ["| scenario | " + " | ".join(families) + " |", "|" + "---|" * (len(families) + 1)]
        for scenario in scenarios:
            cells = [scenario]
            for configs in families.values():
                best = _best(
                    {c: results[(c, scenario)] for c in configs if (c, scenario) in results}
                )
                if best is None:  # not measured: what the first configuration says
                    cells.append(_format(results.get((configs[0], scenario))))
                elif len(configs) > 1:
                    cells.append(f"{_format(best[1])} ({best[0]})")
                else:
                    cells.append(_format(best[1]))
            lines.append("| " + " | ".join(cells) + " |")
    rss_rows = [s for s in scenarios if s.startswith(("drain", "scale"))]
    if rss_rows:
        lines += ["", "Worker peak RSS (MB)", ""]
        lines += ["| scenario | " + " | ".join(systems) + " |", "|" + "---|" * (len(systems) + 1)]
        for scenario in rss_rows:
            cells = [scenario]
            for system in systems:
                rss = results.get((system, scenario), {}).get("peak_rss_mb")
                cells.append("-" if rss is None else f"{rss:.0f}")
            lines.append("| " + " | ".join(cells) + " |")
    cpu_rows = [s for s in scenarios if s.startswith("scale")]
    if cpu_rows:
        lines += ["", "CPU a job, µs in the workers + µs in the store (cores busy)", ""]
        lines += ["| scenario | " + " | ".join(systems) + " |", "|" + "---|" * (len(systems) + 1)]
        for scenario in cpu_rows:
            cells = [scenario]
            for system in systems:
                cells.append(_cpu(results.get((system, scenario), {})))
            lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += [""] + [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--backend", default="memory", help="memory, sqlite, redis, postgres or a URL"
    )
    parser.add_argument(
        "--scenario", default="all", help=f"all, soak, scale or a list of: {', '.join(ALL)}"
    )
    parser.add_argument(
        "--systems",
        default="asyncq",
        help="all (asyncq on asyncio and on uvloop, and every peer of the backend) or some of: "
        f"{', '.join([*ASYNCQ, *PEERS])}",
    )
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="event loop of the soak and of --child runs (the system asyncq-uvloop uses uvloop)",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--n", type=int, default=None, help="jobs per run (default per scenario)")
    parser.add_argument("--soak-n", type=int, default=1_000_000, help="jobs in the soak")
    parser.add_argument("--json", dest="json_path", help="append JSON lines to this file")
    parser.add_argument("--smoke", action="store_true", help="tiny N, one run, memory: for CI")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(_child(args.child, args.backend, args.n, args.loop)))
        return 0
    if args.smoke:
        args.runs, args.n, args.backend, args.systems = 1, 50, "memory", "asyncq"
        if importlib.util.find_spec("uvloop") is not None:
            args.systems = ",".join(ASYNCQ)
    if args.scenario == "soak":
        result = _child("soak", args.backend, args.soak_n, args.loop)
        system = "asyncq" if args.loop == "asyncio" else f"asyncq-{args.loop}"
        _emit(_record(system, args.backend, "soak", result), args.json_path)
        print(
            f"\nsoak, {args.backend}: {result['n']:,} jobs at {result['jobs_per_s']:,.0f} jobs/s; "
            f"worker RSS {result['rss_mb_after_10pct']:.1f} MB after 10%, "
            f"{result['rss_mb_end']:.1f} MB at the end, {result['rss_mb_max']:.1f} MB at most"
        )
        return 0

    scenarios = list(_scenarios(args.scenario))
    unknown = [s for s in scenarios if s not in DEFAULT_N]
    systems = _systems(args.systems, args.backend)
    unknown += [s for s in systems if s not in ASYNCQ and s not in PEERS]
    if unknown:
        parser.error(f"unknown scenario(s) or system(s): {', '.join(unknown)}")
    if any(s in PEERS for s in systems) and not venv_python().exists():
        parser.error("the peers' virtualenv is missing: python -m benchmarks.peers setup")

    results: dict[tuple[str, str], dict[str, Any]] = {}
    for scenario in scenarios:
        n = args.n or DEFAULT_N[scenario]
        runs: dict[str, list[dict[str, Any]]] = {system: [] for system in systems}
        for _ in range(args.runs):
            for system in systems:
                done = runs[system]
                if done and ("na" in done[-1] or "error" in done[-1]):
                    continue  # not available, or broken: say so once
                print(f"{scenario} / {system} ...", file=sys.stderr, flush=True)
                done.append(run_once(system, scenario, args.backend, n))
        for system, done in runs.items():
            failed = [r for r in done if "na" in r or "error" in r]
            result = failed[0] if failed else _median_run(done)
            results[(system, scenario)] = result
            _emit(_record(system, args.backend, scenario, result), args.json_path)

    print()
    print(_tables(args.backend, systems, results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
