"""Benchmark runner: ``python -m benchmarks --backend memory --scenario all``.

Each scenario runs ``--runs`` times (default 3) and reports the median run,
as JSON lines (``--json FILE`` appends them) and a Markdown table on stdout.
``--smoke`` runs every scenario once with tiny N on the memory backend, so CI
proves the runner works without asserting any speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import anyio

from .asyncq_bench import DEFAULT_URLS, SCENARIOS


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    key = "jobs_per_s" if "jobs_per_s" in runs[0] else "p50_ms"
    ordered = sorted(runs, key=lambda r: r[key])
    median = dict(ordered[len(ordered) // 2])
    median["runs"] = [round(r[key], 3) for r in runs]
    return median


def _format(result: dict[str, Any]) -> str:
    if "jobs_per_s" in result:
        return f"{result['jobs_per_s']:,.0f} jobs/s"
    return f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--backend", default="memory", help="memory, sqlite, redis, postgres or a URL"
    )
    parser.add_argument("--scenario", default="all", help=f"all or one of {', '.join(SCENARIOS)}")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--n", type=int, default=None, help="jobs per run (default per scenario)")
    parser.add_argument("--json", dest="json_path", help="append JSON lines to this file")
    parser.add_argument("--smoke", action="store_true", help="tiny N, one run, memory: for CI")
    args = parser.parse_args(argv)

    if args.smoke:
        args.runs, args.n = 1, 50
    url = DEFAULT_URLS.get(args.backend, args.backend)
    names = list(SCENARIOS) if args.scenario == "all" else args.scenario.split(",")
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")

    rows = []
    for name in names:
        function, default_n = SCENARIOS[name]
        n = args.n or default_n
        runs = [anyio.run(function, url, n) for _ in range(args.runs)]
        result = _median_run(runs)
        record = {
            "system": "asyncq",
            "backend": args.backend,
            "scenario": name,
            **result,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        print(json.dumps(record), file=sys.stderr)
        if args.json_path:
            with open(args.json_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        rows.append((name, _format(result)))

    print(f"\n| scenario | asyncq ({args.backend}) |\n|---|---|")
    for name, figure in rows:
        print(f"| {name} | {figure} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
