"""Client-side measurements, run as their own process on the client core (or in a netns).

    python -m bench.worker limit    --address 127.0.0.1:19530 --cycles 200 --pace 0.05
    python -m bench.worker pymilvus --address 127.0.0.1:19530 --cycles 200
    python -m bench.worker imports  --config probe.yaml
    python -m bench.worker floor    --address 127.0.0.1:19530 --cycles 3
    python -m bench.worker held     --address 127.0.0.1:19530 --cycles 300 --pace 0.05

Each prints one JSON object. Keeping each in its own process makes its CPU counter
(`time.process_time()`, every thread of the process) count that client and nothing else.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _limit(args: argparse.Namespace) -> dict[str, Any]:
    from bench.limit import measure_raw_cycles, measure_tcp_connects

    return {
        "raw_cycle": measure_raw_cycles(
            args.address, args.cycles, args.warmup, args.timeout, args.pace, args.health_v1
        ),
        "tcp_connect": measure_tcp_connects(args.address, args.tcp),
    }


def _pymilvus(args: argparse.Namespace) -> dict[str, Any]:
    from bench.peers import measure_pymilvus

    return measure_pymilvus(args.address, args.cycles, args.warmup, args.timeout, args.pace)


def _imports(args: argparse.Namespace) -> dict[str, Any]:
    from bench.footprint import modules_after_start

    return modules_after_start(args.config)


def _floor(args: argparse.Namespace) -> dict[str, Any]:
    from bench.raw import floor

    return floor(args.address, args.cycles, args.timeout, args.pace)


def _held(args: argparse.Namespace) -> dict[str, Any]:
    from bench.held import cycles

    return cycles(args.address, args.cycles, args.warmup, args.pace)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    commands = parser.add_subparsers(dest="command", required=True)
    limit = commands.add_parser("limit", help="raw grpcio cycles and raw TCP connects")
    limit.add_argument("--address", required=True)
    limit.add_argument("--cycles", type=int, default=500)
    limit.add_argument("--tcp", type=int, default=2000)
    limit.add_argument("--warmup", type=int, default=20)
    limit.add_argument("--timeout", type=float, default=5.0)
    limit.add_argument("--pace", type=float, default=0.05, help="seconds from cycle to cycle")
    limit.add_argument("--health-v1", action="store_true", help="also grpc.health.v1 cycles")
    limit.set_defaults(run=_limit)
    pym = commands.add_parser("pymilvus", help="pymilvus connections.connect/disconnect")
    pym.add_argument("--address", required=True)
    pym.add_argument("--cycles", type=int, default=200)
    pym.add_argument("--warmup", type=int, default=5)
    pym.add_argument("--timeout", type=float, default=5.0)
    pym.add_argument("--pace", type=float, default=0.05, help="seconds from cycle to cycle")
    pym.set_defaults(run=_pymilvus)
    imports = commands.add_parser("imports", help="start the App in-process; list modules")
    imports.add_argument("--config", required=True)
    imports.set_defaults(run=_imports)
    low = commands.add_parser(
        "floor", help="raw cycles with only the required libraries; hold until stdin closes"
    )
    low.add_argument("--address", required=True)
    low.add_argument("--cycles", type=int, default=3)
    low.add_argument("--timeout", type=float, default=5.0)
    low.add_argument("--pace", type=float, default=0.05, help="seconds from cycle to cycle")
    low.set_defaults(run=_floor)
    held = commands.add_parser("held", help="fresh cycles and held calls, interleaved")
    held.add_argument("--address", required=True)
    held.add_argument("--cycles", type=int, default=300)
    held.add_argument("--warmup", type=int, default=20)
    held.add_argument("--pace", type=float, default=0.05, help="seconds from call to call")
    held.set_defaults(run=_held)
    args = parser.parse_args(argv)
    json.dump(args.run(args), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
