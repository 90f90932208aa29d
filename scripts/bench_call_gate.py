"""What the call gate costs: Resolve through the server as served and with no interceptors.

Every call passes the gate (``identity.server.call_gate``): metrics, access log and request
id; the API key and role check; the guard against undecodable requests. This benchmark
prices it. A server process over a small linked world serves Resolve twice over: once as
``create_server`` builds it, once with the gate removed (nothing else changes), each beside
a bare gRPC echo server in the same process. Runs alternate between the two, ``--repeat``
times, and report medians of calls/s and of server CPU per call (user + system, from
/proc), so the difference is the gate's price on this machine.

    .venv/bin/python scripts/bench_call_gate.py [--repeat 6] [--seconds 3] [--threads 1 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from identity.v1 import common_pb2, identity_pb2  # noqa: E402
from benchlib import BENCH_KEYS, ECHO_METHOD, authorized, start_echo_server  # noqa: E402
from bench_link import calls_per_second  # noqa: E402

RESOLVE = "/identity.v1.IdentityService/Resolve"
PERSONS = 2000


def serve_main(data: str, gated: bool) -> None:
    """Subprocess mode: link a small world, print the ports, serve until stdin closes."""
    from identity.app import App, LinkInput
    from identity.config import Settings
    from identity.server import create_server

    app = App.open(Settings.load(env={}, data_dir=data, map_size="256MiB", api_keys=BENCH_KEYS))
    app.link_batch([LinkInput([(2, f"p{i}@example.com"), (6, f"device-{i}")], "bench")
                    for i in range(PERSONS)])
    server, port = create_server(app, "127.0.0.1:0", gated=gated)
    server.start()
    echo, echo_port = start_echo_server(16)
    print(f"PORT {port} {echo_port}", flush=True)
    sys.stdin.read()
    echo.stop(None).wait()
    server.stop(None).wait()
    app.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(gated: bool, threads: list[int], seconds: float) -> dict[str, float]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", tempfile.mkdtemp(prefix="bench-gate-"),
         "--gated" if gated else "--open"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port, echo_port = map(int, proc.stdout.readline().split()[1:3])
        raw = grpc.insecure_channel(f"127.0.0.1:{port}")
        channel = authorized(raw)  # the same client both times: the key is sent, maybe unread
        echo = grpc.insecure_channel(f"127.0.0.1:{echo_port}")
        requests = [identity_pb2.ResolveRequest(identifier=common_pb2.Identifier(
            kind=2, value=f"p{i}@example.com")).SerializeToString() for i in range(PERSONS)]
        calls_per_second(channel, RESOLVE, requests, 1, 0.5, [0])  # warm up
        out = {}
        for n in threads:
            before = cpu_seconds(proc.pid)
            rate, calls = calls_per_second(channel, RESOLVE, requests, n, seconds, [0])
            out[f"resolve{n}"] = rate
            out[f"cpu_us{n}"] = (cpu_seconds(proc.pid) - before) / calls * 1e6
            out[f"echo{n}"] = calls_per_second(echo, ECHO_METHOD, requests[:1], n, seconds,
                                               [0])[0]
        raw.close()
        echo.close()
        return out
    finally:
        proc.stdin.close()
        proc.wait()


def run(args: argparse.Namespace) -> None:
    results: dict[str, dict[str, list[float]]] = {"gated": {}, "open": {}}
    for rep in range(args.repeat):
        for name in ("gated", "open"):
            for key, value in measure(name == "gated", args.threads, args.seconds).items():
                results[name].setdefault(key, []).append(value)
        print(f"rep {rep + 1}: " + "; ".join(
            f"{name} " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in r.items())
            for name, r in results.items()), flush=True)
    med = {name: {k: statistics.median(v) for k, v in r.items()} for name, r in results.items()}
    print(f"\nmedians of {args.repeat} (load average {os.getloadavg()[0]:.1f} at the end):")
    for n in args.threads:
        gated, open_ = med["gated"], med["open"]
        print(f"  {n} thread(s): Resolve gated {gated[f'resolve{n}']:,.0f} calls/s "
              f"({gated[f'resolve{n}'] / gated[f'echo{n}']:.2f}x its echo), "
              f"open {open_[f'resolve{n}']:,.0f} calls/s "
              f"({open_[f'resolve{n}'] / open_[f'echo{n}']:.2f}x its echo); "
              f"gate keeps {gated[f'resolve{n}'] / open_[f'resolve{n}']:.2f} of the rate; "
              f"server CPU per call {gated[f'cpu_us{n}']:,.0f} vs {open_[f'cpu_us{n}']:,.0f} us "
              f"(gate: {gated[f'cpu_us{n}'] - open_[f'cpu_us{n}']:+,.0f} us)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each run")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--gated", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--open", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_main(args.serve, args.gated)
    else:
        run(args)


if __name__ == "__main__":
    main()
