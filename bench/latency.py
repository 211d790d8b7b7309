"""The conversation's latency over an interview's life, and the cheap levers on the server's loop, on the capacity rig.

`uv run python -m bench.latency drift [--product NAME=DIR ...] [--rounds 3]`: per product (a checkout whose `main`,
`config` and `interview` are served; default this one), rounds interleaved, a fresh server process each: interview A
alone (PHASE s), then B, C and D join (PHASE s with them), then they leave (PHASE s of A alone again). A's latency
each way (bench/marker.py) in each phase, and how far it moved from its fresh figure. getstream's paced tracks hold
whatever a loop stall queued (up to 30 s to OpenAI, 300 s to Stream): a join or a leave can add latency that never
drains.

`uv run python -m bench.latency ab [--product DIR] [--rounds 3] [--level 4] [--uvloop-path DIR]`: per variant of the
server's loop and garbage collector (asyncio or uvloop; Python's GC as is, or `gc.freeze()` once the server is ready,
before any interview, with raised thresholds), rounds interleaved, a fresh server process each, LEVEL interviews: the
loop's lag, the GC's pauses, the server's CPU and the latency each way. uvloop comes from `--uvloop-path` (e.g.
`uv pip install --target DIR uvloop`), so that the project's environment is left as it is.

`uv run python -m bench.latency network|joinstall ...`: the candidate's audio on a real network, and the join stall
(issue 26): see bench/network.py. There `--product NAME=DIR` names a whole checkout, served by its own server wrapper.

All pin the server to a core of its own where there are two or more (the stand-ins and the rig on the others), and
print a markdown table on stdout and everything measured as JSON on stderr.
"""

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench import network
from bench.capacity import (
    DIRECTIONS,
    DRIFT_MS,
    Standins,
    marker_latencies,
    measure,
    openai_calls,
    pin_rig,
    product_path,
    standins,
    start_interview,
    start_server,
    summary,
    wait_for_audio,
    wait_for_transcripts,
)
from bench.rig import AUTH, ROOT
from tests.standins.network import PROFILES

PHASE, WARM_UP, SETTLE = 20, 8, 3  # seconds: each phase measured; after A joins; after the others joined or left
AB_WARM_UP, AB_MEASURED = 10, 30
GC_THRESHOLD = "20000,50,100"  # raised from Python's (700, 10, 10)
VARIANTS = {
    "asyncio": {},
    "uvloop": {"BENCH_LOOP": "uvloop"},
    "asyncio + gc": {"BENCH_GC_THRESHOLD": GC_THRESHOLD, "freeze": "1"},
    "uvloop + gc": {"BENCH_LOOP": "uvloop", "BENCH_GC_THRESHOLD": GC_THRESHOLD, "freeze": "1"},
}


def a_phase(
    server: Any, http: httpx.Client, stands: Standins, prefix: str, level: int, a_openai: int
) -> dict[str, Any]:
    """One phase: the server's figures, every interview's latency, and A's (its Stream call, its OpenAI call)."""
    figures = measure(server, http, stands, prefix, level, PHASE)
    found = marker_latencies(stands, prefix, *figures["window"])
    mine = {
        "to_openai": found["to_openai"].get(a_openai, []),
        "to_candidate": found["to_candidate"].get(f"{prefix}0", []),
    }
    expected = max(0, int(figures["window"][1] - 1.5) - int(figures["window"][0]))
    figures["a"] = {way: summary([mine[way]] if mine[way] else [], expected) for way in DIRECTIONS}
    return figures


def drift_round(workdir: Path, stands: Standins, name: str, product: Path | None, core: Any, n: int) -> dict[str, Any]:
    prefix = f"drift-{name.replace(' ', '_')}-{n}-"
    server = start_server("service", workdir / f"{name}-{n}", stands, product, core)
    result: dict[str, Any] = {"product": name, "round": n}
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            a_openai = len(openai_calls(stands.openai.url))  # A's OpenAI call: the next one made
            interviews = [start_interview(server, http, f"{prefix}0")]
            wait_for_audio(stands.stream.url, prefix, 1)
            time.sleep(WARM_UP)
            result["alone"] = a_phase(server, http, stands, prefix, 1, a_openai)
            http.get("/bench/stats")
            interviews += [start_interview(server, http, f"{prefix}{k}") for k in (1, 2, 3)]
            wait_for_audio(stands.stream.url, prefix, 4)
            time.sleep(SETTLE)
            result["joins_lag"] = http.get("/bench/stats").json()
            result["with 3 others"] = a_phase(server, http, stands, prefix, 4, a_openai)
            for k in (1, 2, 3):
                http.delete(f"/calls/{prefix}{k}/sessions/{interviews[k]}", headers=AUTH)
            wait_for_transcripts(workdir / f"{name}-{n}" / "transcripts", 3)
            time.sleep(SETTLE)
            result["leaves_lag"] = http.get("/bench/stats").json()
            result["after they left"] = a_phase(server, http, stands, prefix, 1, a_openai)
    finally:
        server.stop()
    return result


PHASES = ("alone", "with 3 others", "after they left")


def interleaved(names: list[str], rounds: int) -> list[tuple[int, str]]:
    """(round, name) for every name in every round, the order rotated each round so that none always goes first."""
    return [(n, name) for n in range(rounds) for name in names[n % len(names) :] + names[: n % len(names)]]


def drift(products: dict[str, Path | None], rounds: int) -> tuple[str, dict[str, Any]]:
    core = pin_rig()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        with standins(workdir) as stands:
            for n, name in interleaved(list(products), rounds):
                results.append(drift_round(workdir, stands, name, products[name], core, n))
                print(json.dumps(brief_drift(results[-1])), file=sys.stderr, flush=True)
    lines = [
        "| product | round | direction | A alone p50/p99 | with B, C, D p50/p99 | after they left p50/p99 | "
        "drift (after - alone, p50) | loop lag max at joins / leaves |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for way, label in DIRECTIONS.items():
            cells = []
            for phase in PHASES:
                a = result[phase]["a"][way]
                cells.append(f"{a['p50_ms']:.0f}/{a['p99_ms']:.0f} ms ({a['found']})" if a["found"] else "none found")
            lines.append(
                f"| {result['product']} | {result['round'] + 1} | {label} | {' | '.join(cells)} | "
                f"{drift_ms(result, way):+.0f} ms | {result['joins_lag']['lag_max_ms']:.0f} / "
                f"{result['leaves_lag']['lag_max_ms']:.0f} ms |"
            )
    lines += [
        "",
        "| product | direction | A alone p50 (median of rounds) | drift after joins and leaves, p50, each round | "
        f"within {DRIFT_MS} ms of fresh |",
        "|---|---|---|---|---|",
    ]
    for name in products:
        mine = [result for result in results if result["product"] == name]
        for way, label in DIRECTIONS.items():
            fresh = statistics.median(result["alone"]["a"][way].get("p50_ms", float("nan")) for result in mine)
            drifts = [drift_ms(result, way) for result in mine]
            held = all(abs(d) <= DRIFT_MS for d in drifts)
            lines.append(
                f"| {name} | {label} | {fresh:.0f} ms | {', '.join(f'{d:+.0f}' for d in drifts)} ms | "
                f"{'met' if held else '**missed**'} |"
            )
    return "\n".join(lines), {"drift": results, "server_core": sorted(core) if core else None}


def drift_ms(result: dict[str, Any], way: str) -> float:
    before, after = result["alone"]["a"][way], result["after they left"]["a"][way]
    if not before["found"] or not after["found"]:
        return float("nan")
    return after["p50_ms"] - before["p50_ms"]


def brief_drift(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "product": result["product"],
        "round": result["round"],
        **{f"{phase} {way}": result[phase]["a"][way].get("p50_ms") for phase in PHASES for way in DIRECTIONS},
    }


def ab_round(
    workdir: Path, stands: Standins, variant: str, product: Path | None, core: Any, n: int, level: int, uvloop: str
) -> dict[str, Any]:
    settings = dict(VARIANTS[variant])
    freeze = settings.pop("freeze", None)
    env = settings | product_path(product, workdir)
    if "BENCH_LOOP" in settings and uvloop:
        env["PYTHONPATH"] = os.pathsep.join([env.get("PYTHONPATH", str(ROOT)), uvloop])
    prefix = f"ab-{variant.replace(' ', '').replace('+', '_')}-{n}-"
    server = start_server("service", workdir / f"ab-{n}-{prefix}", stands, None, core, **env)
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            if freeze:  # once started (everything imported, the launcher warmed up), before any interview
                http.post("/bench/gc-freeze")
            for k in range(level):
                start_interview(server, http, f"{prefix}{k}")
            wait_for_audio(stands.stream.url, prefix, level)
            time.sleep(AB_WARM_UP)
            figures = measure(server, http, stands, prefix, level, AB_MEASURED)
    finally:
        server.stop()
    return {"variant": variant, "round": n} | figures


def ab(product: Path | None, rounds: int, level: int, uvloop: str) -> tuple[str, dict[str, Any]]:
    core = pin_rig()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        with standins(workdir) as stands:
            for n, variant in interleaved(list(VARIANTS), rounds):
                results.append(ab_round(workdir, stands, variant, product, core, n, level, uvloop))
                brief = {
                    key: results[-1][key] for key in ("variant", "round", "loop", "cpu", "lag_p99_ms", "lag_max_ms")
                }
                print(json.dumps(brief), file=sys.stderr, flush=True)
    lines = [
        f"| variant ({level} interviews) | round | loop | server CPU | loop lag p50/p99/max | GC: gen0/1/2 "
        "collections, total / longest pause | latency to OpenAI p50/p99 | to candidate p50/p99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        lat = [result["latency"][way] for way in DIRECTIONS]
        lines.append(
            f"| {result['variant']} | {result['round'] + 1} | {result['loop']} | {result['cpu']:.0%} | "
            f"{result['lag_p50_ms']:.1f}/{result['lag_p99_ms']:.1f}/{result['lag_max_ms']:.0f} ms | "
            f"{result['gc0_collections']}/{result['gc1_collections']}/{result['gc2_collections']}, "
            f"{result['gc_total_ms']:.0f} / {result['gc_max_ms']:.1f} ms | "
            + " | ".join(f"{x.get('p50_ms', float('nan')):.0f}/{x.get('p99_ms', float('nan')):.0f} ms" for x in lat)
            + " |"
        )
    lines += [
        "",
        "| variant | server CPU, median (min-max) | loop lag p99, median (min-max) | loop lag max, median (min-max) |",
        "|---|---|---|---|",
    ]
    for variant in VARIANTS:
        mine = [result for result in results if result["variant"] == variant]

        def spread(key: str, scale: float = 1, unit: str = " ms", digits: int = 1, mine: list[Any] = mine) -> str:
            values = [result[key] * scale for result in mine]
            return f"{statistics.median(values):.{digits}f}{unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"

        lines.append(
            f"| {variant} | {spread('cpu', 100, '%', 0)} | {spread('lag_p99_ms')} | {spread('lag_max_ms', digits=0)} |"
        )
    return "\n".join(lines), {"ab": results, "server_core": sorted(core) if core else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("drift", "ab", "network", "joinstall"))
    parser.add_argument("--product", action="append", default=[], help="[NAME=]DIR: a checkout whose product to serve")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--level", type=int, default=4, help="ab: live interviews")
    parser.add_argument("--uvloop-path", default="", help="ab: a directory holding uvloop (uv pip install --target)")
    parser.add_argument("--seconds", type=float, help="each phase (drift) or measurement (ab, network), for a trial")
    parser.add_argument("--profile", action="append", choices=sorted(PROFILES), help="network: the candidate's leg")
    parser.add_argument("--live", type=int, default=2, help="joinstall: interviews talking while others join")
    parser.add_argument("--quick", action="store_true", help="network: the test suite's (wifi, 1 interview, a join)")
    args = parser.parse_args()
    global PHASE, AB_MEASURED
    if args.seconds:
        PHASE = AB_MEASURED = network.MEASURED = args.seconds
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    products: dict[str, Path | None] = {}
    for given in args.product:
        name, _, directory = given.rpartition("=")
        products[name or Path(directory).name] = Path(directory)
    started = time.perf_counter()
    if args.what == "network":
        profiles = args.profile or (["wifi"] if args.quick else ["wifi", "worse", "clean"])
        rounds, level = (1, 1) if args.quick else (args.rounds, args.level if args.level != 4 else network.LEVEL)
        table, measured = network.network(products or {"this checkout": None}, profiles, rounds, level, args.quick)
    elif args.what == "joinstall":
        table, measured = network.joinstall(products or {"this checkout": None}, args.rounds, args.live)
    elif args.what == "drift":
        table, measured = drift(products or {"this checkout": None}, args.rounds)
    else:
        product = next(iter(products.values()), None)
        table, measured = ab(product, args.rounds, args.level, args.uvloop_path)
    header = (
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, server on core "
        f"{measured.get('server_core', '?')}; `uv run python -m bench.latency {' '.join(sys.argv[1:])}`, "
        f"{time.perf_counter() - started:.0f} s."
    )
    print(header + "\n\n" + table)
    print(json.dumps(measured), file=sys.stderr)


if __name__ == "__main__":
    main()
