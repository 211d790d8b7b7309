"""`uv run python -m bench [--capacity] [--quick] [--output FILE]`: the measurements of one run, as a markdown table.

Without `--capacity`: invites, start-up, memory, transcript storage and install. With it: `bench/capacity.py`
(live interviews with both legs on the wire: Stream and OpenAI stand-ins, each in a process of its own).

Comparisons are ratios measured side by side in the same run; figures are medians of repeated runs.
"""

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.rig import AUTH, ROOT, TOKEN, Row, Server, environment, percentile, slope, verdict

BURST_GAP_SECONDS = 5  # between bursts: invites on the hour come minutes apart


async def invite_latencies(server: Server, clients: int, per_client: int) -> tuple[list[float], dict[int, int]]:
    """Seconds from request to answer, `clients` at once, each call id distinct."""
    latencies: list[float] = []
    codes: dict[int, int] = {}

    async def client(n: int, http: httpx.AsyncClient) -> None:
        for k in range(per_client):
            call_id = f"bench-{server.kind}-{clients}-{n}-{k}-{time.monotonic_ns()}"
            started = time.perf_counter()
            if server.kind == "runner":
                response = await http.post(f"/calls/{call_id}/sessions", json={"call_type": "default"})
            else:
                body = {
                    "call_id": call_id,
                    "candidate_user_id": "candidate-7",
                    "candidate_name": "Ada",
                    "job_title": "Engineer",
                }
                response = await http.post("/interviews", json=body, headers=AUTH)
            latencies.append(time.perf_counter() - started)
            codes[response.status_code] = codes.get(response.status_code, 0) + 1

    limits = httpx.Limits(max_connections=clients + 5)
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as http:
        await asyncio.gather(*(client(n, http) for n in range(clients)))
    return latencies, codes


STARTUPS: dict[str, list[float]] = {"service": [], "runner": []}  # seconds to /ready, every server started


def bench_invites(workdir: Path, quick: bool) -> list[Row]:
    """1 client back to back; bursts of 20 at once, a pause between (interviews start on the hour); 20 sustained."""
    scenarios = {
        "1 client, back to back": (1, 10 if quick else 40, 1),
        "bursts of 20 concurrent invites": (20, 1, 2 if quick else 8),
        "20 clients, back to back (sustained)": (20, 2 if quick else 5, 1),
    }
    servers = {kind: Server(kind, workdir) for kind in ("service", "runner")}
    results: dict[tuple[str, str], list[float]] = {}
    try:
        for kind, server in servers.items():
            STARTUPS[kind].append(server.wait_ready())
        for name, (clients, per_client, bursts) in scenarios.items():
            for kind, server in servers.items():  # side by side, same moment, same machine
                time.sleep(
                    1 if quick else 3
                )  # what the last scenario started has failed its join (offline) and settled
                latencies: list[float] = []
                for _ in range(bursts):
                    measured, codes = asyncio.run(invite_latencies(server, clients, per_client))
                    assert set(codes) <= {201, 202}, f"{kind}: {codes}"
                    latencies += measured
                    time.sleep((2 if quick else BURST_GAP_SECONDS) if bursts > 1 else 0)
                results[(kind, name)] = latencies
    finally:
        for server in servers.values():
            server.stop()
    rows: list[Row] = []
    for name in scenarios:
        ours, theirs = results[("service", name)], results[("runner", name)]
        p50, p99 = percentile(ours, 0.5) * 1000, percentile(ours, 0.99) * 1000
        r50, r99 = percentile(theirs, 0.5) * 1000, percentile(theirs, 0.99) * 1000
        figure = f"service p50 {p50:.0f} ms, p99 {p99:.0f} ms; Runner p50 {r50:.0f} ms, p99 {r99:.0f} ms"
        figure += f"; ratio p50 {p50 / r50:.2f}, p99 {p99 / r99:.2f} ({len(ours)} invites each)"
        target, met = "no slower than the Runner (p50 ratio <= 1.1)", p50 <= 1.1 * r50
        rows.append((f"invite latency: {name}", figure, target, verdict(met)))
    return rows


def bench_startup(workdir: Path, quick: bool) -> list[Row]:
    runs = 1 if quick else 5
    imports = "import vision_agents.core, vision_agents.plugins.openai, vision_agents.plugins.getstream"
    floor = statistics.median(timed([sys.executable, "-c", imports], workdir) for _ in range(runs))
    starts: dict[str, float] = {}
    resident: dict[str, float] = {"service": float("nan"), "runner": float("nan")}  # not measured with --quick
    for kind in ("service", "runner"):
        samples = list(STARTUPS[kind]) if quick else []  # --quick reuses the start-ups of the latency servers
        for _ in range(0 if quick else runs):
            server = Server(kind, workdir)
            try:
                samples.append(server.wait_ready())
                time.sleep(2)  # settled after warm-up
                resident[kind] = server.rss_mb()
            finally:
                server.stop()
        starts[kind] = statistics.median(samples)
    service, runner = starts["service"], starts["runner"]
    memory = f"service {resident['service']:.0f} MB, Runner {resident['runner']:.0f} MB"
    startup = f"service {service:.2f} s, Runner {runner:.2f} s (ratio {service / runner:.2f})"
    overhead = f"{floor:.2f} s (service overhead {service / floor - 1:+.0%})"
    return [
        ("start-up to /ready 200", startup, "", ""),
        ("bare import of vision_agents + 2 plugins", overhead, "within 10% of it", verdict(service <= 1.1 * floor)),
        ("resident memory when ready, real plugins", memory, "", ""),
    ]


def timed(command: list[str], workdir: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=workdir, env=environment(workdir), check=True)
    return time.perf_counter() - started


def bench_memory(workdir: Path, quick: bool) -> list[Row]:
    levels = (0, 5) if quick else (0, 10, 25, 50)
    server = Server("fakes", workdir, IDLE_TIMEOUT_SECONDS="600")
    points: list[tuple[int, float, float]] = []
    try:
        server.wait_ready()
        live = 0
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as http:
            for level in levels:
                while live < level:
                    body = {
                        "call_id": f"mem-{live}",
                        "candidate_user_id": "candidate-7",
                        "candidate_name": "Ada",
                        "job_title": "Engineer",
                    }
                    assert http.post("/interviews", json=body).status_code == 202
                    live += 1
                time.sleep(2 if quick else 8)  # frames flowing, lines accumulating
                cpu_before, wall_before = server.cpu_seconds(), time.perf_counter()
                time.sleep(1 if quick else 5)
                cpu = (server.cpu_seconds() - cpu_before) / (time.perf_counter() - wall_before)
                points.append((level, server.rss_mb(), cpu))
                assert http.get("/ready").status_code == 200
    finally:
        server.stop()
    mb, cpu = slope([(n, rss) for n, rss, _ in points]), slope([(n, c) for n, _, c in points])
    table = ", ".join(f"{n}: {rss:.0f} MB / {c:.0%} CPU" for n, rss, c in points)
    return [
        ("resident memory (live interviews: RSS / CPU of a core)", table, "", ""),
        ("memory per live interview (slope)", f"{mb:.1f} MB", "< 15 MB", verdict(mb < 15)),
        ("CPU per live interview (slope)", f"{cpu:.1%} of a core", "< 2% of a core", verdict(cpu < 0.02)),
    ]


def bench_shipping(workdir: Path, quick: bool) -> list[Row]:
    from tests.conftest import BUCKET, FakeGcs

    server = FakeGcs()
    os.environ["STORAGE_EMULATOR_HOST"] = server.url
    server.start()
    try:
        return asyncio.run(ship_and_probe(workdir, BUCKET, runs=3 if quick else 9))
    finally:
        server.stop()


async def ship_and_probe(workdir: Path, bucket: str, runs: int) -> list[Row]:
    """What `Interviews.conduct` does when an interview ends: save on the loop, upload in a worker thread."""
    from google.cloud import storage

    from config import Settings
    from interview import Interviews

    credentials = {"stream_api_key": "k", "stream_api_secret": "s", "openai_api_key": "k", "api_token": TOKEN}
    settings = Settings(**credentials, gcs_bucket=bucket, transcript_dir=workdir / "ship")  # type: ignore[arg-type]
    interviews = Interviews(settings)
    reader = storage.Client().bucket(bucket)

    async def keep(doc: dict[str, Any]) -> None:
        """As the interview's `finally` does: written on the loop (then renamed), uploaded from a worker thread."""
        path = settings.transcript_dir / f"{doc['call_type']}/{doc['call_id']}/{doc['interview_id']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".tmp").write_text(json.dumps(doc, ensure_ascii=False, indent=1))
        await asyncio.to_thread(interviews.upload, [path.with_suffix(".tmp").replace(path)])

    rows: list[Row] = []
    for lines, label in ((300, "30-minute interview (300 lines)"), (20, "2-minute interview (20 lines)")):
        samples = []
        for run in range(runs):
            doc = document(f"{lines}-{run}-{time.monotonic_ns()}", lines)
            started = time.perf_counter()
            await keep(doc)
            blob = reader.blob(f"transcripts/default/{doc['call_id']}/{doc['interview_id']}.json")
            while not await asyncio.to_thread(blob.exists):
                await asyncio.sleep(0.005)
            samples.append(time.perf_counter() - started)
        p50 = statistics.median(samples) * 1000
        rows.append((f"call end to readable in GCS: {label}", f"p50 {p50:.0f} ms", "p50 < 200 ms", verdict(p50 < 200)))

    for count, label in ((1, "one transcript stored"), (20, "20 transcripts stored in the same instant")):
        worst = []
        for _ in range(runs):
            stalls: list[float] = []
            probing = asyncio.create_task(loop_lag(stalls))
            await asyncio.sleep(0.01)
            docs = [document(f"burst-{n}-{time.monotonic_ns()}", 300) for n in range(count)]
            await asyncio.gather(*(keep(doc) for doc in docs))
            probing.cancel()
            worst.append(max(stalls) * 1000)
        figure = f"median of the worst {statistics.median(worst):.1f} ms, worst {max(worst):.1f} ms ({runs} runs)"
        rows.append((f"event-loop stall, {label}", figure, "< 20 ms", verdict(statistics.median(worst) < 20)))
    return rows


def document(interview_id: str, lines: int) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    message = {"role": "candidate", "text": "A fairly long answer about distributed systems " * 3, "at": now}
    doc = {"version": 3, "interview_id": interview_id, "call_id": f"c-{interview_id}", "call_type": "default"}
    doc |= {"candidate_name": "Ada", "job_title": "Engineer", "started_at": now, "messages": [message] * lines}
    return doc | dict.fromkeys(["ended_at", "end_reason", "error"])


async def loop_lag(stalls: list[float]) -> None:
    """How late a 1 ms sleep wakes up: the longest time the loop could not run anything else."""
    while True:
        started = time.perf_counter()
        await asyncio.sleep(0.001)
        stalls.append(time.perf_counter() - started - 0.001)


def bench_install(quick: bool) -> list[Row]:
    if quick:
        return [("install (uv sync --frozen vs pip)", "skipped with --quick", "", "")]
    uv = shutil.which("uv") or "uv"

    def uv_sync(target: Path) -> None:
        env = os.environ | {"UV_PROJECT_ENVIRONMENT": str(target)}
        subprocess.run([uv, "sync", "--frozen", "--no-dev", "--quiet"], cwd=ROOT, env=env, check=True)

    def pip_install(target: Path) -> None:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True)
        pip = [
            uv,
            "run",
            "--no-project",
            "--with",
            "pip",
            "--python",
            str(target / "bin" / "python"),
            "python",
            "-m",
            "pip",
        ]
        subprocess.run([*pip, "install", "--quiet", "-r", str(ROOT / "requirements.txt")], check=True)

    uv_time = fresh_install_seconds(uv_sync, runs=3)
    pip_time = fresh_install_seconds(pip_install, runs=1)
    figure = f"uv {uv_time:.1f} s, pip {pip_time:.1f} s: uv {pip_time / uv_time:.0f}x faster"
    return [
        (
            "fresh venv, warm caches: uv sync --frozen vs pip install -r requirements.txt",
            figure,
            "10-100x",
            verdict(pip_time / uv_time >= 10),
        )
    ]


def fresh_install_seconds(install: Callable[[Path], None], runs: int) -> float:
    with tempfile.TemporaryDirectory() as warm:
        install(Path(warm) / "venv")  # warms the cache; not timed
    samples = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as fresh:
            started = time.perf_counter()
            install(Path(fresh) / "venv")
            samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer runs and levels: a smoke test under a minute")
    parser.add_argument(
        "--capacity",
        action="store_true",
        help="only the capacity rig: live interviews, Stream and OpenAI stand-ins in processes of their own",
    )
    parser.add_argument("--output", type=Path, help="also write the table and the machine to this markdown file")
    parser.add_argument("--levels", help="with --capacity: the levels to climb, e.g. 1,2,4,5")
    parser.add_argument("--kinds", default="service,runner", help="with --capacity: service, runner or both")
    parser.add_argument("--product", type=Path, help="with --capacity: serve this checkout's main/config/interview")
    parser.add_argument("--no-camera-cost", action="store_true", help="with --capacity: skip the camera-off runs")
    parser.add_argument("--measured", type=int, help="with --capacity: seconds measured at each level (75)")
    parser.add_argument("--warm-up", type=int, help="with --capacity: seconds of warm-up at each level (15)")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.capacity:
        from bench import capacity

        levels = tuple(int(level) for level in args.levels.split(",")) if args.levels else None
        kinds = tuple(args.kinds.split(","))
        camera_cost = False if args.no_camera_cost else None
        capacity.MEASURED, capacity.WARM_UP = args.measured or capacity.MEASURED, args.warm_up or capacity.WARM_UP
        rows, measured = capacity.run(args.quick, levels, kinds, args.product, camera_cost)
        print(json.dumps(measured), file=sys.stderr)
    else:
        with tempfile.TemporaryDirectory() as directory:
            workdir = Path(directory)
            rows = bench_invites(workdir, args.quick) + bench_startup(workdir, args.quick)
            rows += bench_memory(workdir, args.quick) + bench_shipping(workdir, args.quick) + bench_install(args.quick)
    machine = f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} cores"
    command = "uv run python -m bench " + " ".join(sys.argv[1:])
    header = (
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine}; `{command}`, {time.perf_counter() - started:.0f} s."
    )
    lines = [header, "", "| measurement | figure | target | |", "|---|---|---|---|"]
    lines += [f"| {what} | {figure} | {target} | {met} |" for what, figure, target, met in rows]
    table = "\n".join(lines)
    print(table)
    if args.output:
        args.output.write_text(table + "\n")
    print(json.dumps({"rows": len(rows)}), file=sys.stderr)


if __name__ == "__main__":
    main()
