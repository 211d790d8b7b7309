"""The candidate's audio on a real network (issue 26): latency and continuity each way, and the join stall.

`uv run python -m bench.latency network [--product NAME=DIR ...] [--rounds 3] [--profile wifi ...] [--level 2]`: per
round, profile and product (rounds interleaved, the products' order rotated), a fresh server process with LEVEL
interviews; the candidate's leg (between the Stream stand-in and the service) shaped by the profile, both ways
(tests/standins/network.py), the OpenAI leg left clean (loopback, a datacenter's). Over MEASURED seconds, each way:
the latency markers' p50/p99 (bench/marker.py) and their p50 over the window's first and second halves (a latency
that grows after losses shows there), and the continuity of a pilot tone (bench/continuity.py): the share of 20 ms
windows that arrive broken and the longest dropout; towards OpenAI as the OpenAI stand-in decodes it, towards the
candidate as a browser-like buffer (Opus concealment, NetEq-like) in the Stream stand-in plays it. The products of a
round see the same network, packet by packet (seeded by round, profile and interview number).

`uv run python -m bench.latency joinstall [--product NAME=DIR ...] [--rounds 3] [--live 2]`: per round, product and
proxy setting (with: Stream's and OpenAI's HTTPS sent to a dead loopback proxy, as the rig does by default, so that
httpx builds a proxy transport for every client; without: no proxy in the server's environment), a fresh server with
LIVE interviews talking, then one interview joins, then three at once: the server's event-loop worst lag during each
join and what the live interviews lost meanwhile: their frames late or missing at Stream, and their continuity each
way (clean network).

`--product NAME=DIR` names a whole checkout (e.g. a `git worktree` of the commit to compare), served by its own
`bench/serve.py`, since the server wrapper follows the product's API; the stand-ins and the rig are this checkout's.
`--quick` (the test suite's): this checkout, the wifi profile, one interview for a few seconds, then one join
measured beside it. Both print a markdown table on stdout and everything measured as JSON on stderr.
"""

import statistics
import sys
import tempfile
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import httpx

from bench.capacity import (
    FRAMES_PER_SECOND,
    Standins,
    late,
    measure,
    openai_calls,
    pin_rig,
    start_interview,
    start_server,
    stream_calls,
)
from bench.continuity import combine
from bench.rig import percentile

WARM_UP, MEASURED, LEVEL = 6, 30, 2
QUICK_WARM_UP, QUICK_MEASURED = 2, 5
SETTLE, JOIN_TAIL = 5, 2  # seconds: after the live interviews are heard; after a join's interview is heard
WAYS = {"to_openai": "candidate → OpenAI", "to_candidate": "OpenAI → candidate"}
MARKER_GRACE = 1.5


def own_server(product: Path | None) -> dict[str, str]:
    """A product is a whole checkout, served by its own `bench/serve.py` (its `main`, `config`, `interview` and the
    server wrapper that fits them: the wrapper changes with the product's API); the stand-ins are this checkout's."""
    return {"PYTHONPATH": str(product.resolve())} if product else {}


def set_network(stands: Standins, profile: str, seed: str) -> None:
    httpx.post(f"{stands.stream.url}/network", params={"profile": profile, "seed": seed}, timeout=10).raise_for_status()


def call_id(tag: str, k: int, seed_key: str) -> str:
    """`TAG-K--SEEDKEY`: the Stream stand-in seeds each call's network by what follows `--`."""
    return f"{tag}-{k}--{seed_key}-{k}"


def wait_heard(stands: Standins, prefix: str, count: int, timeout: float = 45) -> float:
    """Until `count` calls of `prefix` have the interviewer's audio at Stream and a subscription; seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        calls = stream_calls(stands.stream.url, prefix).values()
        if sum(call["agent_frames"] > 0 and "TRACK_TYPE_AUDIO" in call["subscribed"] for call in calls) >= count:
            break
        time.sleep(0.2)
    return time.monotonic() - started


def each_way(
    stands: Standins, stream_ids: Collection[str], openai_calls_of: Collection[int], start: float, end: float
) -> dict[str, dict[str, Any]]:
    """Per direction, over [start, end), for the interviews given by their Stream call ids and their OpenAI calls'
    numbers: every marker's latency (second, ms) and the continuity, all of them pooled; and the network's shaping."""
    window = {"from": start, "to": end}
    stream = httpx.get(f"{stands.stream.url}/stats", params=window, timeout=10).json()["calls"]
    stream = {key: call for key, call in stream.items() if key in stream_ids}
    openai = httpx.get(f"{stands.openai.url}/stats", params=window, timeout=10).json().get("calls", [])
    openai = [openai[n] for n in openai_calls_of if n < len(openai)]
    stop = end - MARKER_GRACE
    result = {}
    for way, calls in (("to_openai", openai), ("to_candidate", list(stream.values()))):
        markers = sorted(
            (second, ms) for call in calls for second, ms in call.get("marker_latencies", []) if start <= second < stop
        )
        result[way] = {
            "markers": markers,
            "continuity": combine([call["continuity"] for call in calls if "continuity" in call]),
        }
    shaped = [call.get("network", {}) for call in stream.values()]
    result["network"] = {way: [call[way] for call in shaped if way in call] for way in ("up", "down", "playout")}  # type: ignore[assignment]
    return result


def latency(markers: list[tuple[int, float]], start: float, end: float) -> dict[str, Any]:
    values = [ms for _, ms in markers]
    if not values:
        return {"found": 0}
    middle = (start + end - MARKER_GRACE) / 2
    first = [ms for second, ms in markers if second < middle]
    second = [ms for second, ms in markers if second >= middle]
    return {
        "found": len(values),
        "p50_ms": statistics.median(values),
        "p99_ms": percentile(values, 0.99),
        "max_ms": max(values),
        "first_half_p50_ms": statistics.median(first) if first else None,
        "second_half_p50_ms": statistics.median(second) if second else None,
    }


def live_losses(before: dict[str, Any], after: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The interviewer's frames of the live calls (`before`'s) late or missing at Stream between two readings."""
    figures: dict[str, Any] = {
        "level": len(before),
        "expected_frames": round(len(before) * seconds * FRAMES_PER_SECOND),
    }
    for key in ("agent_frames", "late_frames", "missing_frames"):
        figures[key] = sum(after[call][key] - before[call][key] for call in before if call in after)
    figures["late"] = late(figures)
    figures["worst_lateness_ms"] = max(
        (after[call]["worst_lateness_ms"] for call in before if call in after), default=0
    )
    return figures


def a_join(
    stands: Standins,
    server: Any,
    http: httpx.Client,
    tag: str,
    seed_key: str,
    first: int,
    count: int,
    live: tuple[str, list[int]],
    tail: float = JOIN_TAIL,
) -> dict[str, Any]:
    """`count` interviews join at once beside the live ones (`live`: their Stream call id prefix, their OpenAI calls'
    numbers): from the first invite until every new one is heard at Stream, plus `tail` s."""
    http.get("/bench/stats")  # empties the lag probe
    before = stream_calls(stands.stream.url, live[0], reset=True)
    start, wall = time.time(), time.perf_counter()
    for k in range(first, first + count):
        start_interview(server, http, call_id(tag, k, seed_key))
    heard = wait_heard(stands, f"{tag}-", first + count)
    time.sleep(tail)
    elapsed, end = time.perf_counter() - wall, time.time()
    stall = http.get("/bench/stats").json()
    after = stream_calls(stands.stream.url, live[0], reset=True)
    ways = each_way(stands, set(before), live[1], start, end)
    return {
        "joins": count,
        "heard_after_s": round(heard, 2),
        "window_s": round(elapsed, 2),
        "lag_max_ms": stall["lag_max_ms"],
        "lag_p99_ms": stall["lag_p99_ms"],
        "live": live_losses(before, after, elapsed),
        "live_continuity": {way: ways[way]["continuity"] for way in WAYS},
    }


def network_round(
    workdir: Path,
    stands: Standins,
    name: str,
    index: int,
    product: Path | None,
    core: Any,
    n: int,
    profile: str,
    level: int,
    quick: bool,
) -> dict[str, Any]:
    set_network(stands, profile, str(n))
    tag = f"net{n}{profile[:2]}p{index}"
    openai_before = len(openai_calls(stands.openai.url))
    server = start_server("service", workdir / f"{tag}", stands, None, core, **own_server(product))
    result: dict[str, Any] = {"product": name, "profile": profile, "round": n}
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            http.get("/bench/stats")
            for k in range(level):
                start_interview(server, http, call_id(tag, k, f"r{n}{profile}"))
            result["heard_after_s"] = wait_heard(stands, f"{tag}-", level)
            result["joins_lag_max_ms"] = http.get("/bench/stats").json()["lag_max_ms"]
            time.sleep(QUICK_WARM_UP if quick else WARM_UP)
            seconds = QUICK_MEASURED if quick else MEASURED
            figures = measure(server, http, stands, f"{tag}-", level, seconds)
            start, end = figures["window"]
            mine = (f"{tag}-", list(range(openai_before, openai_before + level)))
            ways = each_way(stands, set(stream_calls(stands.stream.url, mine[0])), mine[1], start, end)
            result |= {key: figures[key] for key in ("cpu", "cpus", "rss", "lag_p50_ms", "lag_p99_ms", "lag_max_ms")}
            result["late_at_stream"] = late(figures)
            result["expected_frames"] = figures["expected_frames"]
            for way in WAYS:
                result[way] = latency(ways[way]["markers"], start, end) | {"continuity": ways[way]["continuity"]}
            result["network"] = ways["network"]
            if quick:  # one more interview joins beside the first: the join stall, measured
                result["join"] = a_join(stands, server, http, tag, f"r{n}{profile}", level, 1, mine, tail=1)
    finally:
        server.stop()
    return result


def interleaved(keys: list[Any], rounds: int) -> list[tuple[int, Any]]:
    return [(n, key) for n in range(rounds) for key in keys[n % len(keys) :] + keys[: n % len(keys)]]


def fmt(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def share(continuity: dict[str, Any]) -> str:
    if not continuity.get("windows"):
        return "no windows"
    return (
        f"{100 * continuity['broken_share']:.1f}% of {continuity['windows']}, longest "
        f"{continuity['longest_dropout_ms']} ms"
    )


def network(
    products: dict[str, Path | None], profiles: list[str], rounds: int, level: int, quick: bool
) -> tuple[str, dict[str, Any]]:
    from bench.capacity import standins

    core = pin_rig()
    results: list[dict[str, Any]] = []
    names = list(products)
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        with standins(workdir, camera=False, network=profiles[0]) as stands:
            for turn, (n, profile) in enumerate((n, p) for n in range(rounds) for p in profiles):
                for name in names[turn % len(names) :] + names[: turn % len(names)]:  # who goes first, rotated
                    index = names.index(name)
                    results.append(
                        network_round(workdir, stands, name, index, products[name], core, n, profile, level, quick)
                    )
                    brief = {key: results[-1].get(key) for key in ("product", "profile", "round", "cpu")}
                    for way in WAYS:
                        brief[way] = [results[-1][way].get("p50_ms"), results[-1][way]["continuity"]["broken_share"]]
                    print(brief, file=sys.stderr, flush=True)
    return network_table(results, products, profiles), {"network": results, "server_core": sorted(core or [])}


def network_table(results: list[dict[str, Any]], products: dict[str, Path | None], profiles: list[str]) -> str:
    lines = [
        "| profile | product | round | candidate → OpenAI p50/p99 (1st → 2nd half p50) | broken → OpenAI | "
        "OpenAI → candidate p50/p99 (1st → 2nd half p50) | broken → candidate | network up: dropped / reordered / "
        "delay p95; down: the same; browser buffer concealed / delay | server CPU | loop lag p99/max |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cells = []
        for way in WAYS:
            x = r[way]
            cells.append(
                f"{fmt(x.get('p50_ms'))}/{fmt(x.get('p99_ms'))} ms ({fmt(x.get('first_half_p50_ms'))} → "
                f"{fmt(x.get('second_half_p50_ms'))})"
                if x["found"]
                else "none found"
            )
            cells.append(share(x["continuity"]))
        net = r["network"]
        shaped = []
        for way in ("up", "down"):
            parts = net.get(way, [])
            dropped, reordered = sum(p["dropped"] for p in parts), sum(p["reordered"] for p in parts)
            packets = sum(p["packets"] for p in parts)
            p95 = statistics.median(p["added_delay_p95_ms"] for p in parts) if parts else 0
            shaped.append(f"{dropped}/{reordered} of {packets}, {p95:.0f} ms")
        playout = net.get("playout", [])
        shaped.append(f"{sum(p['concealed'] for p in playout)} / {max((p['delay_ms'] for p in playout), default=0)} ms")
        lines.append(
            f"| {r['profile']} | {r['product']} | {r['round'] + 1} | {' | '.join(cells)} | {'; '.join(shaped)} | "
            f"{r['cpu']:.0%} | {r['lag_p99_ms']:.1f}/{r['lag_max_ms']:.0f} ms |"
        )
    lines += [
        "",
        "| profile | product | candidate → OpenAI p50, median (min-max) | broken → OpenAI, median (min-max); "
        "longest dropout | OpenAI → candidate p50 | broken → candidate; longest dropout | server CPU, median |",
        "|---|---|---|---|---|---|---|",
    ]
    for profile in profiles:
        for name in products:
            mine = [r for r in results if r["product"] == name and r["profile"] == profile]
            if not mine:
                continue
            cells = []
            for way in WAYS:
                p50s = [r[way]["p50_ms"] for r in mine if r[way]["found"]]
                broken = [100 * (r[way]["continuity"]["broken_share"] or 0) for r in mine]
                longest = max(r[way]["continuity"]["longest_dropout_ms"] for r in mine)
                cells.append(spread(p50s, " ms"))
                cells.append(f"{spread(broken, '%', 1)}; {longest} ms")
            cpu = statistics.median(r["cpu"] for r in mine)
            lines.append(f"| {profile} | {name} | {' | '.join(cells)} | {cpu:.0%} |")
    return "\n".join(lines)


def spread(values: list[float], unit: str, digits: int = 0) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):.{digits}f}{unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def lost(continuity: dict[str, Any], live: int) -> str:
    """Broken audio of the live interviews during a join: ms per live interview, and the longest dropout."""
    if not continuity.get("windows"):
        return "no windows"
    return f"{continuity['broken'] * 20 / live:.0f} ms (longest {continuity['longest_dropout_ms']} ms)"


def joinstall_round(
    workdir: Path,
    stands: Standins,
    name: str,
    index: int,
    product: Path | None,
    core: Any,
    n: int,
    proxy: bool,
    live: int,
) -> dict[str, Any]:
    tag = f"join{n}{'x' if proxy else 'o'}p{index}"
    env = {} if proxy else {"HTTPS_PROXY": "", "https_proxy": "", "HTTP_PROXY": "", "http_proxy": ""}
    server = start_server("service", workdir / tag, stands, None, core, **env, **own_server(product))
    result: dict[str, Any] = {"product": name, "proxy": proxy, "round": n}
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            openai_before = len(openai_calls(stands.openai.url))
            for k in range(live):
                start_interview(server, http, call_id(f"{tag}l", k, f"j{n}l"))
            wait_heard(stands, f"{tag}l-", live)
            time.sleep(SETTLE)
            lives = (f"{tag}l-", list(range(openai_before, openai_before + live)))
            result["one"] = a_join(stands, server, http, f"{tag}a", f"j{n}a", 0, 1, lives)
            time.sleep(SETTLE)
            result["three"] = a_join(stands, server, http, f"{tag}b", f"j{n}b", 0, 3, lives)
    finally:
        server.stop()
    return result


def joinstall(products: dict[str, Path | None], rounds: int, live: int) -> tuple[str, dict[str, Any]]:
    from bench.capacity import standins

    core = pin_rig()
    results: list[dict[str, Any]] = []
    keys = [(name, proxy) for name in products for proxy in (True, False)]
    names = list(products)
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        with standins(workdir, camera=False, network="clean") as stands:
            for n, (name, proxy) in interleaved(keys, rounds):
                index = names.index(name)
                results.append(joinstall_round(workdir, stands, name, index, products[name], core, n, proxy, live))
                brief = {"product": name, "proxy": proxy, "round": n}
                brief |= {size: results[-1][size]["lag_max_ms"] for size in ("one", "three")}
                print(brief, file=sys.stderr, flush=True)
    lines = [
        f"| product | proxy | round | joins at once | loop lag max / p99 during the join | live interviews' ({live}) "
        "frames late or missing at Stream (worst lateness) | broken audio → OpenAI per live interview | broken audio "
        "→ candidate per live interview | joiners heard after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for size in ("one", "three"):
            j = r[size]
            lines.append(
                f"| {r['product']} | {'dead proxy' if r['proxy'] else 'none'} | {r['round'] + 1} | {j['joins']} | "
                f"{j['lag_max_ms']:.0f} / {j['lag_p99_ms']:.0f} ms | {j['live']['late']}/{j['live']['expected_frames']}"
                f" ({j['live']['worst_lateness_ms']:.0f} ms) | {lost(j['live_continuity']['to_openai'], live)} | "
                f"{lost(j['live_continuity']['to_candidate'], live)} | {j['heard_after_s']:.1f} s |"
            )
    lines += [
        "",
        "| product | proxy | joins at once | loop lag max, median (min-max) | live frames late or missing, median "
        "(min-max) | broken audio → OpenAI per live interview, ms, median (min-max) | the same → candidate |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in products:
        for proxy in (True, False):
            mine = [r for r in results if r["product"] == name and r["proxy"] == proxy]
            for size, count in (("one", 1), ("three", 3)):
                lags = [r[size]["lag_max_ms"] for r in mine]
                lates = [r[size]["live"]["late"] for r in mine]
                broken = {way: [r[size]["live_continuity"][way]["broken"] * 20 / live for r in mine] for way in WAYS}
                lines.append(
                    f"| {name} | {'dead proxy' if proxy else 'none'} | {count} | {spread(lags, ' ms')} | "
                    f"{spread(lates, '')} | {spread(broken['to_openai'], ' ms')} | "
                    f"{spread(broken['to_candidate'], ' ms')} |"
                )
    return "\n".join(lines), {"joinstall": results, "server_core": sorted(core or [])}
