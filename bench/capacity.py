"""`uv run python -m bench --capacity [--quick]`: how many interviews one process holds, both legs on the wire.

Three kinds of process, each its own: the server measured (`bench/serve.py`: this service, or Vision-Agents' Runner
with the same plugins), Stream's side (`python -m tests.standins.stream`: coordinator, SFU and media over aiortc; every
call an agent joins gets a candidate who speaks, real speech in real time, with a 720p VP8 camera) and OpenAI's side
(`bench/openai_server.py`: speaks 2 s of every 4 and reports one line of each speaker every 4 s). The server's real
`getstream.Edge` and real `openai.Realtime` talk WebRTC to both, on 127.0.0.1. The figures of the server process are
its own: CPU and RSS from /proc, its event loop's lag (a 10 ms probe in it), and its outgoing audio timed where it
arrives, at the Stream stand-in.

At N = 1, 2, 4, 6, 8 live interviews (with `--quick`: 2), each server is measured until it no longer keeps up (loop
lag p99 >= 20 ms, or more than 1% of the interviewer's frames late or missing); then, at one level, with the camera
off, for the camera's own cost.
"""

import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.rig import AUTH, ROOT, Row, Server, die_with_parent, environment, slope, verdict
from tests.conftest import free_port, wait_for_port

LEVELS, QUICK_LEVELS = (1, 2, 4, 6, 8), (2,)
CAMERA_LEVEL = 4  # camera on minus camera off, measured here (or at the highest level below it kept up with)
WARM_UP, MEASURED = 15, 75  # seconds at each level: joined, talking, buffers warm; then measured
QUICK_WARM_UP, QUICK_MEASURED = 4, 8
IDLE_SECONDS, QUICK_IDLE_SECONDS = 10, 2
FRAMES_PER_SECOND = 50  # the interviewer's audio: 20 ms frames
KINDS = ("service", "runner")
COUNTERS = ("agent_frames", "loud_frames", "late_frames", "missing_frames", "video_frames_sent")
Level = dict[str, Any]


@contextlib.contextmanager
def standin(module: str, workdir: Path, *args: str) -> Iterator[str]:
    """`python -m MODULE PORT ARGS`, its output in `workdir`, stopped on exit whatever happens."""
    port = free_port()
    log = (workdir / f"{module.rsplit('.', 1)[-1]}-{port}.log").open("w")
    command = [sys.executable, "-m", module, str(port), *args]
    process = subprocess.Popen(
        command, cwd=ROOT, env=environment(workdir), stdout=log, stderr=log, preexec_fn=die_with_parent
    )
    try:
        wait_for_port(port, process, module, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


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


def wait_for_audio(stream_url: str, prefix: str, count: int, timeout: float = 45) -> None:
    """Until the interviewer of each of `count` calls sends audio to Stream and hears the candidate (joined,
    published, subscribed), or `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        calls = stream_calls(stream_url, prefix).values()
        if sum(call["agent_frames"] > 0 and "TRACK_TYPE_AUDIO" in call["subscribed"] for call in calls) >= count:
            return
        time.sleep(0.5)


def measure(server: Server, http: httpx.Client, stream_url: str, prefix: str, level: int, seconds: float) -> Level:
    """Over `seconds`: the server's CPU (share of one core), RSS, loop lag, and its outgoing audio at Stream."""
    http.get("/bench/stats")  # empties the lag probe's samples
    before = stream_calls(stream_url, prefix, reset=True)  # and starts Stream's window for the worst lateness/gap
    cpu, wall = server.cpu_seconds(), time.perf_counter()
    time.sleep(seconds)
    elapsed = time.perf_counter() - wall
    cpu = (server.cpu_seconds() - cpu) / elapsed
    after = stream_calls(stream_url, prefix, reset=True)
    figures: Level = {"cpu": cpu, "rss": server.rss_mb(), "level": level} | http.get("/bench/stats").json()
    for key in COUNTERS:
        figures[key] = sum(call[key] - before.get(call_id, {}).get(key, 0) for call_id, call in after.items())
    figures["expected_frames"] = round(level * elapsed * FRAMES_PER_SECOND)
    figures["worst_lateness_ms"] = max((call["worst_lateness_ms"] for call in after.values()), default=0.0)
    figures["largest_gap_ms"] = max((call["largest_gap_ms"] for call in after.values()), default=0.0)
    return figures


def late(figures: Level) -> int:
    """Frames of the interviewer's voice late at Stream, or missing: skipped in the RTP timeline, or never sent."""
    short = max(0, figures["expected_frames"] - figures["agent_frames"] - figures["missing_frames"])
    return figures["late_frames"] + figures["missing_frames"] + short


def kept_up(figures: Level) -> bool:
    """The loop answered within 20 ms at p99 and at most 1% of the interviewer's frames were late or missing."""
    return figures["lag_p99_ms"] < 20 and late(figures) <= 0.01 * figures["expected_frames"]


def run_kind(
    kind: str, workdir: Path, openai_url: str, stream_url: str, levels: tuple[int, ...], quick: bool, tag: str = ""
) -> dict[str, Any]:
    """One server process, climbing `levels` while it keeps up; what reached the stand-ins from its interviews."""
    env = {"OPENAI_BASE_URL": f"{openai_url}/v1", "STREAM_STANDIN_URL": stream_url}
    env |= {"IDLE_TIMEOUT_SECONDS": "3600", "MAX_INTERVIEW_MINUTES": "55"}
    workdir.mkdir(parents=True)
    prefix = f"cap-{kind}{tag}-"
    openai_before = httpx.get(f"{openai_url}/stats", timeout=10).json()
    server = Server(f"capacity-{kind}", workdir, **env)
    levels_measured: dict[int, Level] = {}
    result: dict[str, Any] = {"levels": levels_measured}
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            idle = measure(server, http, stream_url, prefix, 0, QUICK_IDLE_SECONDS if quick else IDLE_SECONDS)
            result["idle"] = idle
            interviews: list[str] = []
            for level in levels:
                while len(interviews) < level:
                    interviews.append(start_interview(server, http, f"{prefix}{len(interviews)}"))
                wait_for_audio(stream_url, prefix, level)
                time.sleep(QUICK_WARM_UP if quick else WARM_UP)
                seconds = QUICK_MEASURED if quick else MEASURED
                levels_measured[level] = measure(server, http, stream_url, prefix, level, seconds)
                if not kept_up(levels_measured[level]):
                    break  # this server no longer keeps up: climbing further measures its backlog
            if kind == "service":
                for n, interview in enumerate(interviews):
                    http.delete(f"/calls/{prefix}{n}/sessions/{interview}", headers=AUTH)
                result["transcripts"] = wait_for_transcripts(workdir / "transcripts", len(interviews))
            result["interviews"] = len(interviews)
    finally:
        server.stop()
    calls = stream_calls(stream_url, prefix)
    openai_after = httpx.get(f"{openai_url}/stats", timeout=10).json()
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


def run(quick: bool) -> tuple[list[Row], dict[str, Any]]:
    """The table's rows, and everything measured (for the checks of `--quick` and for BENCHMARKS.md)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds, so every process started here is stopped
    measured: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        with (
            standin("bench.openai_server", workdir) as openai_url,
            standin("tests.standins.stream", workdir, "--camera") as stream_url,
        ):
            for kind in KINDS:
                measured[kind] = run_kind(
                    kind, workdir / kind, openai_url, stream_url, QUICK_LEVELS if quick else LEVELS, quick
                )
            measured["camera_kbps"] = httpx.get(f"{stream_url}/stats", timeout=10).json()["camera_kbps"]
        if not quick:  # the camera's own cost: the same server kind and level, the candidate's camera off
            with (
                standin("bench.openai_server", workdir) as openai_url,
                standin("tests.standins.stream", workdir, "--no-camera") as stream_url,
            ):
                for kind in KINDS:
                    level = camera_level(measured[kind])
                    measured[f"{kind}_camera_off"] = run_kind(
                        kind, workdir / f"{kind}-off", openai_url, stream_url, (level,), quick, tag="-off"
                    )
    return rows(measured, quick), measured


def camera_level(result: dict[str, Any]) -> int:
    """CAMERA_LEVEL, or the highest level below it that the server kept up with: a saturated process's CPU is capped
    at about one core (the GIL), whatever the camera costs."""
    held = [level for level, figures in result["levels"].items() if level <= CAMERA_LEVEL and kept_up(figures)]
    return max(held, default=min(result["levels"]))


def level_row(level: int, ours: Level | None, theirs: Level | None) -> Row:
    def figure(name: str, figures: Level | None) -> str:
        if figures is None:
            return f"{name}: not measured (it no longer kept up below)"
        return (
            f"{name}: CPU {figures['cpu']:.0%} of a core, RSS {figures['rss']:.0f} MB, loop lag p50/p99/max "
            f"{figures['lag_p50_ms']:.1f}/{figures['lag_p99_ms']:.1f}/{figures['lag_max_ms']:.0f} ms, frames late "
            f"{late(figures)}/{figures['expected_frames']} (worst {figures['worst_lateness_ms']:.0f} ms, "
            f"gap {figures['largest_gap_ms']:.0f} ms)"
        )

    return (
        f"{level} live interviews",
        f"{figure('service', ours)}; {figure('Runner', theirs)}",
        "the service keeps up: loop p99 < 20 ms, <= 1% of frames late",
        verdict(ours is not None and kept_up(ours)),
    )


def per_interview(result: dict[str, Any], levels: list[int], key: str) -> float:
    points = [(0, result["idle"][key])] + [(level, result["levels"][level][key]) for level in levels]
    return slope(points)


def rows(measured: dict[str, Any], quick: bool) -> list[Row]:
    ours, theirs = measured["service"], measured["runner"]
    table = [
        level_row(level, ours["levels"].get(level), theirs["levels"].get(level))
        for level in sorted(set(ours["levels"]) | set(theirs["levels"]))
    ]
    for kind, result in (("service", ours), ("Runner", theirs)):
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
        table.append((f"what reached the stand-ins ({kind})", figure, target, verdict(met) if target else ""))
    if quick:
        return table
    # Per-interview slopes over idle and the levels both kept up with: past those a process falls behind and its
    # queues grow, which the rows of those levels show.
    fitted = sorted(level for level in ours["levels"] if level in theirs["levels"])
    fitted = [level for level in fitted if kept_up(ours["levels"][level]) and kept_up(theirs["levels"][level])]
    fitted = fitted or [min(ours["levels"])]
    over = "slope over " + ", ".join(str(level) for level in [0, *fitted])
    share, peer_share = per_interview(ours, fitted, "cpu"), per_interview(theirs, fitted, "cpu")
    mb, peer_mb = per_interview(ours, fitted, "rss"), per_interview(theirs, fitted, "rss")
    held = [level for level, figures in ours["levels"].items() if kept_up(figures)]
    sizing = max(held, default=min(ours["levels"]))
    table += [
        (
            f"CPU per live interview ({over})",
            f"{share:.1%} of a core (Runner {peer_share:.1%}, ratio {share / max(peer_share, 1e-9):.2f})",
            "less than the Runner",
            verdict(share < peer_share),
        ),
        (
            f"memory per live interview ({over})",
            f"{mb:.1f} MB (Runner {peer_mb:.1f} MB)",
            "",
            "",
        ),
    ]
    for kind, result in (("service", ours), ("Runner", theirs)):
        off = measured[f"{kind.lower()}_camera_off"]
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
            (f"the camera's own cost, {kind} (on minus off)", figure, target, verdict(cost < 0.01) if target else "")
        )
    sized = ours["levels"][sizing]
    table += [
        (
            f"loop lag p99 at the sizing level ({sizing} interviews, the most the service kept up with)",
            f"{sized['lag_p99_ms']:.1f} ms, frames late {late(sized)}/{sized['expected_frames']}",
            "< 20 ms",
            verdict(sized["lag_p99_ms"] < 20),
        ),
        (
            "interviews per core",
            f"{1 / max(share, 1e-9):.1f} by the CPU slope; one process kept up with {max(held, default=0)} of "
            f"those measured (Runner {max((n for n, f in theirs['levels'].items() if kept_up(f)), default=0)})",
            "",
            "",
        ),
    ]
    return table
