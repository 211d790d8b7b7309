"""`uv run python -m bench --capacity [--quick]`: how many interviews one process holds, both legs on the wire.

Three kinds of process, each its own: the server measured (`bench/serve.py`: this service, or Vision-Agents' Runner
with the same plugins), Stream's side (`python -m tests.standins.stream`: coordinator, SFU and media over aiortc; every
call an agent joins gets a candidate who speaks, real speech in real time, with a 720p VP8 camera) and OpenAI's side
(`bench/openai_server.py`: speaks 2 s of every 4 and reports one line of each speaker every 4 s). The server's real
`getstream.Edge` and real `openai.Realtime` talk WebRTC to both, on 127.0.0.1. The figures of the server process are
its own: CPU and RSS from /proc, its event loop's lag (a 10 ms probe in it), its outgoing audio timed where it
arrives, at the Stream stand-in, and the conversation's latency in each direction: a tone marker once a second in the
candidate's microphone (Stream stand-in) found where it reaches OpenAI's stand-in, and one in OpenAI's voice found
where it reaches Stream's (bench/marker.py). Where the machine has more than one core the server runs on a core of
its own and the stand-ins and the rig on the others; every process's CPU is reported.

At N = 1, 2, 4, 6, 8 live interviews (with `--quick`: 2), each server is measured until it no longer keeps up (loop
lag p99 >= 20 ms, or more than 1% of the interviewer's frames late or missing); then, at one level, with the camera
off, for the camera's own cost. A level whose interviews' latency (the worst interview's median, either direction) is
more than 20 ms above one interview's alone (level 1) is not kept up with either (a lasting slip, which the frames'
rolling median absorbs), but the climb goes on: what the process holds in CPU is still worth measuring.
"""

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.rig import (
    AUTH,
    ROOT,
    Row,
    Server,
    cores,
    cpu_seconds,
    die_with_parent,
    environment,
    percentile,
    slope,
    verdict,
)
from tests.conftest import free_port, wait_for_port

LEVELS, QUICK_LEVELS = (1, 2, 4, 6, 8), (2,)
CAMERA_LEVEL = 4  # camera on minus camera off, measured here (or at the highest level below it kept up with)
WARM_UP, MEASURED = 15, 75  # seconds at each level: joined, talking, buffers warm; then measured
QUICK_WARM_UP, QUICK_MEASURED = 4, 8
IDLE_SECONDS, QUICK_IDLE_SECONDS = 10, 2
FRAMES_PER_SECOND = 50  # the interviewer's audio: 20 ms frames
KINDS = ("service", "runner")
COUNTERS = ("agent_frames", "loud_frames", "late_frames", "missing_frames", "video_frames_sent")
DIRECTIONS = {"to_openai": "candidate → OpenAI", "to_candidate": "OpenAI → candidate"}
DRIFT_MS = 20  # latency this far above one interview's alone is a slip that lasts
MARKER_GRACE = 1.5  # seconds: a marker sent this close to the end of a window may not have arrived when it is read
Level = dict[str, Any]


@dataclass
class Standin:
    url: str
    pid: int


@contextlib.contextmanager
def standin(module: str, workdir: Path, *args: str) -> Iterator[Standin]:
    """`python -m MODULE PORT ARGS`, its output in `workdir`, stopped on exit whatever happens."""
    port = free_port()
    log = (workdir / f"{module.rsplit('.', 1)[-1]}-{port}.log").open("w")
    command = [sys.executable, "-m", module, str(port), *args]
    process = subprocess.Popen(
        command, cwd=ROOT, env=environment(workdir), stdout=log, stderr=log, preexec_fn=die_with_parent
    )
    try:
        wait_for_port(port, process, module, timeout=60)
        yield Standin(f"http://127.0.0.1:{port}", process.pid)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


@dataclass
class Standins:
    """The two stand-ins of a run."""

    stream: Standin
    openai: Standin


@contextlib.contextmanager
def standins(workdir: Path, camera: bool = True, network: str | None = None) -> Iterator[Standins]:
    """Stream's side and OpenAI's, each a process of its own, with latency markers both ways; with a `network`
    profile, the candidate's leg shaped by it and pilot tones both ways for continuity (tests/standins/network.py,
    bench/continuity.py)."""
    shaped = ("--network", network) if network else ()
    pilot = ("--pilot",) if network else ()
    with (
        standin("bench.openai_server", workdir, "--markers", *pilot) as openai,
        standin(
            "tests.standins.stream", workdir, "--camera" if camera else "--no-camera", "--markers", *shaped
        ) as stream,
    ):
        yield Standins(stream, openai)


def product_path(product: Path | None, workdir: Path) -> dict[str, str]:
    """The environment that serves `product`'s `main`, `config` and `interview` (another checkout: a commit to
    compare) with this checkout's bench and stand-ins: its top-level modules and files, alone, first on PYTHONPATH."""
    if product is None:
        return {}
    modules = workdir / f"product-{product.name}"
    if not modules.exists():
        modules.mkdir(parents=True)
        for path in [*product.glob("*.py"), *product.glob("*.md"), *product.glob("*.json")]:
            (modules / path.name).symlink_to(path.resolve())
    return {"PYTHONPATH": f"{modules}{os.pathsep}{ROOT}"}


def start_server(
    kind: str, workdir: Path, stands: Standins, product: Path | None = None, core: set[int] | None = None, **env: str
) -> Server:
    env = {"OPENAI_BASE_URL": f"{stands.openai.url}/v1", "STREAM_STANDIN_URL": stands.stream.url} | env
    env |= {"IDLE_TIMEOUT_SECONDS": "3600", "MAX_INTERVIEW_MINUTES": "55", "DRAIN_TIMEOUT_SECONDS": "0"}
    env |= product_path(product, workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    return Server(f"capacity-{kind}", workdir, core=core, **env)


def start_interview(server: Server, http: httpx.Client, call_id: str) -> str:
    if server.kind == "capacity-runner":
        response = http.post(f"/calls/{call_id}/sessions", json={"call_type": "default"})
        assert response.status_code == 201, response.text
        return response.json()["session_id"]
    body = {"call_id": call_id, "candidate_user_id": "candidate-7", "candidate_name": "Ada Lovelace"}
    body |= {"job_title": "Backend Engineer"}
    response = http.post("/interviews", json=body, headers=AUTH)
    assert response.status_code == 202, response.text
    return response.json()["interview_id"]


def stream_calls(stream_url: str, prefix: str, reset: bool = False) -> dict[str, dict[str, Any]]:
    """The Stream stand-in's figures for the calls of one server (by call id prefix)."""
    stats = httpx.get(f"{stream_url}/stats", params={"reset": "1"} if reset else {}, timeout=10).json()
    return {call_id: figures for call_id, figures in stats["calls"].items() if call_id.startswith(prefix)}


def openai_calls(openai_url: str) -> list[dict[str, Any]]:
    """The OpenAI stand-in's calls (one per interview's OpenAI session), in the order they were made, with markers."""
    return httpx.get(f"{openai_url}/stats", timeout=10).json().get("calls", [])


def wait_for_audio(stream_url: str, prefix: str, count: int, timeout: float = 45) -> None:
    """Until the interviewer of each of `count` calls sends audio to Stream and hears the candidate (joined,
    published, subscribed), or `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        calls = stream_calls(stream_url, prefix).values()
        if sum(call["agent_frames"] > 0 and "TRACK_TYPE_AUDIO" in call["subscribed"] for call in calls) >= count:
            return
        time.sleep(0.5)


def marker_latencies(stands: Standins, prefix: str, start: float, end: float) -> dict[str, dict[Any, list[float]]]:
    """Per direction and interview (Stream call id; OpenAI call number), the latency in ms of each marker sent within
    [start, end - MARKER_GRACE): those sent later may still be on their way."""
    stop = end - MARKER_GRACE

    def within(markers: list[list[float]]) -> list[float]:
        return [ms for second, ms in markers if start <= second < stop]

    to_candidate = {
        key: within(call.get("marker_latencies", [])) for key, call in stream_calls(stands.stream.url, prefix).items()
    }
    to_openai = {n: within(call["marker_latencies"]) for n, call in enumerate(openai_calls(stands.openai.url))}
    return {
        "to_openai": {key: found for key, found in to_openai.items() if found},
        "to_candidate": {key: found for key, found in to_candidate.items() if found},
    }


def summary(per_interview: list[list[float]], expected: int = 0) -> dict[str, Any]:
    """p50/p99/max over every marker, the worst interview's p50 and p99, how many markers were found."""
    pooled = sorted(ms for found in per_interview for ms in found)
    figures: dict[str, Any] = {"found": len(pooled), "expected": expected}
    if pooled:
        figures |= {"p50_ms": statistics.median(pooled), "p99_ms": percentile(pooled, 0.99), "max_ms": pooled[-1]}
        figures["worst_p50_ms"] = max(statistics.median(found) for found in per_interview)
        figures["worst_p99_ms"] = max(percentile(found, 0.99) for found in per_interview)
        figures["interviews"] = [
            [round(statistics.median(found), 1), round(percentile(found, 0.99), 1), len(found)]
            for found in per_interview
        ]
    return figures


def measure(server: Server, http: httpx.Client, stands: Standins, prefix: str, level: int, seconds: float) -> Level:
    """Over `seconds`: the server's CPU (share of one core), RSS, loop lag, its outgoing audio at Stream, the
    latency of the markers both ways, and every process's CPU."""
    http.get("/bench/stats")  # empties the lag probe's samples
    before = stream_calls(stands.stream.url, prefix, reset=True)  # and starts Stream's window for the worst lateness
    pids = {"server": server.process.pid, "stream": stands.stream.pid, "openai": stands.openai.pid, "rig": os.getpid()}
    cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
    wall, start = time.perf_counter(), time.time()
    time.sleep(seconds)
    elapsed, end = time.perf_counter() - wall, time.time()
    cpus = {name: (cpu_seconds(pid) - cpu[name]) / elapsed for name, pid in pids.items()}
    after = stream_calls(stands.stream.url, prefix, reset=True)
    figures: Level = {"cpu": cpus["server"], "cpus": cpus, "rss": server.rss_mb(), "level": level}
    figures |= {"window": [start, end]} | http.get("/bench/stats").json()
    for key in COUNTERS:
        figures[key] = sum(call[key] - before.get(call_id, {}).get(key, 0) for call_id, call in after.items())
    figures["expected_frames"] = round(level * elapsed * FRAMES_PER_SECOND)
    figures["worst_lateness_ms"] = max((call["worst_lateness_ms"] for call in after.values()), default=0.0)
    figures["largest_gap_ms"] = max((call["largest_gap_ms"] for call in after.values()), default=0.0)
    found = marker_latencies(stands, prefix, start, end)
    expected = level * max(0, int(end - MARKER_GRACE) - int(start))
    figures["latency"] = {way: summary(list(found[way].values()), expected) for way in DIRECTIONS}
    return figures


def late(figures: Level) -> int:
    """Frames of the interviewer's voice late at Stream, or missing: skipped in the RTP timeline, or never sent."""
    short = max(0, figures["expected_frames"] - figures["agent_frames"] - figures["missing_frames"])
    return figures["late_frames"] + figures["missing_frames"] + short


def holds(figures: Level) -> bool:
    """The loop answered within 20 ms at p99 and at most 1% of the interviewer's frames were late or missing."""
    return figures["lag_p99_ms"] < 20 and late(figures) <= 0.01 * figures["expected_frames"]


def kept_up(figures: Level, fresh: Level | None = None) -> bool:
    """`holds`, the latency measured both ways, and (given `fresh`, one interview alone) no interview's median latency
    more than DRIFT_MS above the fresh one's, either way."""
    if not holds(figures):
        return False
    for way in DIRECTIONS:
        latency = figures["latency"][way]
        if not latency["found"]:
            return False
        base = fresh["latency"][way] if fresh else None
        if base and base["found"] and latency["worst_p50_ms"] > base["p50_ms"] + DRIFT_MS:
            return False
    return True


def fresh_level(result: dict[str, Any]) -> Level | None:
    """One interview alone, where it was measured: the latency the others are held to."""
    return result["levels"].get(1)


def run_kind(
    kind: str,
    workdir: Path,
    stands: Standins,
    levels: tuple[int, ...],
    quick: bool,
    tag: str = "",
    product: Path | None = None,
    core: set[int] | None = None,
) -> dict[str, Any]:
    """One server process, climbing `levels` while it holds; what reached the stand-ins from its interviews."""
    prefix = f"cap-{kind}{tag}-"
    openai_before = httpx.get(f"{stands.openai.url}/stats", timeout=10).json()
    server = start_server(kind, workdir, stands, product, core)
    levels_measured: dict[int, Level] = {}
    result: dict[str, Any] = {"levels": levels_measured}
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            idle = measure(server, http, stands, prefix, 0, QUICK_IDLE_SECONDS if quick else IDLE_SECONDS)
            result["idle"] = idle
            interviews: list[str] = []
            for level in levels:
                while len(interviews) < level:
                    interviews.append(start_interview(server, http, f"{prefix}{len(interviews)}"))
                wait_for_audio(stands.stream.url, prefix, level)
                time.sleep(QUICK_WARM_UP if quick else WARM_UP)
                seconds = QUICK_MEASURED if quick else MEASURED
                levels_measured[level] = measure(server, http, stands, prefix, level, seconds)
                if not holds(levels_measured[level]):
                    break  # this server no longer keeps up: climbing further measures its backlog
            if kind == "service":
                for n, interview in enumerate(interviews):
                    http.delete(f"/calls/{prefix}{n}/sessions/{interview}", headers=AUTH)
                result["transcripts"] = wait_for_transcripts(workdir / "transcripts", len(interviews))
            result["interviews"] = len(interviews)
    finally:
        server.stop()
    calls = stream_calls(stands.stream.url, prefix)
    openai_after = httpx.get(f"{stands.openai.url}/stats", timeout=10).json()
    counted = ("peers", "frames_in", "voiced_frames_in")
    result["openai"] = {key: openai_after[key] - openai_before[key] for key in counted}
    result["stream"] = {
        "video_subscriptions": sum(call["video_subscriptions"] for call in calls.values()),
        "subscribed": sorted({track for call in calls.values() for track in call["subscribed"]}),
        "video_frames_sent": sum(call["video_frames_sent"] for call in calls.values()),
        "loud_frames": sum(call["loud_frames"] for call in calls.values()),
        "publisher_offers": sum(call["publisher_offers"] for call in calls.values()),
        "speakers": sorted({speaker for call in calls.values() for speaker in call["speakers"]}),
        "calls": len(calls),
    }
    return result


def wait_for_transcripts(directory: Path, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while len(found := list(directory.rglob("*.json"))) < count and time.monotonic() < deadline:
        time.sleep(0.5)
    return [json.loads(path.read_text()) for path in found]


def pin_rig() -> set[int] | None:
    """The rig (and the stand-ins it starts from now on) off the server's core; the server's core, or None."""
    server_core, rest = cores()
    if rest:
        os.sched_setaffinity(0, rest)
    return server_core


def run(
    quick: bool,
    levels: tuple[int, ...] | None = None,
    kinds: tuple[str, ...] = KINDS,
    product: Path | None = None,
    camera_cost: bool | None = None,
) -> tuple[list[Row], dict[str, Any]]:
    """The table's rows, and everything measured (for the checks of `--quick` and for BENCHMARKS.md)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds, so every process started here is stopped
    levels = levels or (QUICK_LEVELS if quick else LEVELS)
    camera_cost = not quick if camera_cost is None else camera_cost
    core = pin_rig()
    measured: dict[str, Any] = {}  # the servers' first: the suite finds this line by its start, '{"service"'
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        with standins(workdir) as stands:
            for kind in kinds:
                measured[kind] = run_kind(kind, workdir / kind, stands, levels, quick, product=product, core=core)
            measured["camera_kbps"] = httpx.get(f"{stands.stream.url}/stats", timeout=10).json()["camera_kbps"]
        if camera_cost:  # the camera's own cost: the same server kind and level, the candidate's camera off
            with standins(workdir, camera=False) as stands:
                for kind in kinds:
                    level = camera_level(measured[kind])
                    measured[f"{kind}_camera_off"] = run_kind(
                        kind, workdir / f"{kind}-off", stands, (level,), quick, "-off", product, core
                    )
    measured |= {"server_core": sorted(core) if core else None, "rig_cores": sorted(os.sched_getaffinity(0))}
    return rows(measured, quick), measured


def camera_level(result: dict[str, Any]) -> int:
    """CAMERA_LEVEL, or the highest level below it that the server held: a saturated process's CPU is capped
    at about one core (the GIL), whatever the camera costs."""
    held = [level for level, figures in result["levels"].items() if level <= CAMERA_LEVEL and holds(figures)]
    return max(held, default=min(result["levels"]))


def latency_text(figures: Level) -> str:
    parts = []
    for way, name in DIRECTIONS.items():
        latency = figures["latency"][way]
        if not latency["found"]:
            parts.append(f"{name}: no marker found (of {latency['expected']})")
            continue
        parts.append(
            f"{name} p50/p99 {latency['p50_ms']:.0f}/{latency['p99_ms']:.0f} ms (worst interview's p50 "
            f"{latency['worst_p50_ms']:.0f}, {latency['found']}/{latency['expected']} markers)"
        )
    return "latency " + ", ".join(parts)


def level_row(level: int, results: dict[str, dict[str, Any]]) -> Row:
    def figure(name: str, result: dict[str, Any]) -> str:
        figures = result["levels"].get(level)
        if figures is None:
            return f"{name}: not measured (it no longer kept up below)"
        cpus = figures["cpus"]
        return (
            f"{name}: CPU {figures['cpu']:.0%} of a core, RSS {figures['rss']:.0f} MB, loop lag p50/p99/max "
            f"{figures['lag_p50_ms']:.1f}/{figures['lag_p99_ms']:.1f}/{figures['lag_max_ms']:.0f} ms, frames late "
            f"{late(figures)}/{figures['expected_frames']} (worst {figures['worst_lateness_ms']:.0f} ms, "
            f"gap {figures['largest_gap_ms']:.0f} ms), {latency_text(figures)}; stand-ins' CPU: Stream "
            f"{cpus['stream']:.0%}, OpenAI {cpus['openai']:.0%}, rig {cpus['rig']:.0%}"
        )

    ours = results["service"]["levels"].get(level) if "service" in results else None
    fresh = fresh_level(results["service"]) if "service" in results else None
    names = {"service": "service", "runner": "Runner"}
    return (
        f"{level} live interviews",
        "; ".join(figure(names[kind], result) for kind, result in results.items()),
        f"the service keeps up: loop p99 < 20 ms, <= 1% of frames late, latency within {DRIFT_MS} ms of 1 interview's",
        verdict(ours is not None and kept_up(ours, fresh if level != 1 else None)),
    )


def per_interview(result: dict[str, Any], levels: list[int], key: str) -> float:
    points = [(0, result["idle"][key])] + [(level, result["levels"][level][key]) for level in levels]
    return slope(points)


def rows(measured: dict[str, Any], quick: bool) -> list[Row]:
    results = {kind: measured[kind] for kind in KINDS if kind in measured}
    every_level = sorted({level for result in results.values() for level in result["levels"]})
    table = [level_row(level, results) for level in every_level]
    for kind, result in results.items():
        stream, openai = result["stream"], result["openai"]
        figure = (
            f"OpenAI sessions per interview {openai['peers'] / max(result['interviews'], 1):.1f}, candidate frames "
            f"at OpenAI {openai['frames_in']} ({openai['voiced_frames_in']} voiced); at Stream: subscribed "
            f"{'/'.join(t.removeprefix('TRACK_TYPE_') for t in stream['subscribed'])}, camera frames sent "
            f"{stream['video_frames_sent']}, voiced interviewer frames {stream['loud_frames']}, chat speakers "
            f"{', '.join(stream['speakers'])}"
        )
        target = "1 session, audio only, no camera frames" if kind == "service" else ""
        met = openai["peers"] == result["interviews"] and stream["video_subscriptions"] == 0
        name = "service" if kind == "service" else "Runner"
        table.append((f"what reached the stand-ins ({name})", figure, target, verdict(met) if target else ""))
    if quick or "service" not in results:
        return table
    ours = results["service"]
    fresh = fresh_level(ours)
    held = [level for level, figures in ours["levels"].items() if kept_up(figures, fresh if level != 1 else None)]
    sizing = max(held, default=min(ours["levels"]))
    if "runner" in results:
        theirs = results["runner"]
        # Per-interview slopes over idle and the levels both held: past those a process falls behind and its
        # queues grow, which the rows of those levels show.
        fitted = sorted(level for level in ours["levels"] if level in theirs["levels"])
        fitted = [level for level in fitted if holds(ours["levels"][level]) and holds(theirs["levels"][level])]
    else:
        theirs = None
        fitted = sorted(level for level in ours["levels"] if holds(ours["levels"][level]))
    fitted = fitted or [min(ours["levels"])]
    over = "slope over " + ", ".join(str(level) for level in [0, *fitted])
    share, mb = per_interview(ours, fitted, "cpu"), per_interview(ours, fitted, "rss")
    if theirs is not None:
        peer_share, peer_mb = per_interview(theirs, fitted, "cpu"), per_interview(theirs, fitted, "rss")
        table += [
            (
                f"CPU per live interview ({over})",
                f"{share:.1%} of a core (Runner {peer_share:.1%}, ratio {share / max(peer_share, 1e-9):.2f})",
                "less than the Runner",
                verdict(share < peer_share),
            ),
            (f"memory per live interview ({over})", f"{mb:.1f} MB (Runner {peer_mb:.1f} MB)", "", ""),
        ]
    else:
        table += [
            (f"CPU per live interview ({over})", f"{share:.1%} of a core", "", ""),
            (f"memory per live interview ({over})", f"{mb:.1f} MB", "", ""),
        ]
    for kind, result in results.items():
        off = measured.get(f"{kind}_camera_off")
        if off is None:
            continue
        name = "service" if kind == "service" else "Runner"
        level = next(iter(off["levels"]))
        on_figures, off_figures = result["levels"][level], off["levels"][level]
        cost = on_figures["cpu"] - off_figures["cpu"]
        figure = (
            f"{cost * 100:+.1f} points of a core ({on_figures['cpu']:.0%} on, {off_figures['cpu']:.0%} off), RSS "
            f"{on_figures['rss'] - off_figures['rss']:+.0f} MB, at {level} interviews, camera "
            f"{measured['camera_kbps']:.0f} kbps"
        )
        target = "< 1 point of a core" if kind == "service" else ""
        table.append(
            (f"the camera's own cost, {name} (on minus off)", figure, target, verdict(cost < 0.01) if target else "")
        )
    sized = ours["levels"][sizing]
    runner_held = (
        max((n for n, f in theirs["levels"].items() if kept_up(f, fresh_level(theirs) if n != 1 else None)), default=0)
        if theirs
        else None
    )
    table += [
        (
            f"loop lag p99 at the sizing level ({sizing} interviews, the most the service kept up with)",
            f"{sized['lag_p99_ms']:.1f} ms, frames late {late(sized)}/{sized['expected_frames']}; "
            + latency_text(sized),
            "< 20 ms",
            verdict(sized["lag_p99_ms"] < 20),
        ),
        (
            "interviews per core",
            f"{1 / max(share, 1e-9):.1f} by the CPU slope; one process kept up with {max(held, default=0)} of "
            f"those measured" + (f" (Runner {runner_held})" if runner_held is not None else ""),
            "",
            "",
        ),
    ]
    return table
