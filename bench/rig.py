"""What every benchmark shares: the servers as real processes, and the arithmetic of the table."""

import ctypes
import hashlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx

from tests.conftest import NO_INTERNET, free_port

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Row = tuple[str, str, str, str]  # what, figure, target, verdict
SILERO_WHEEL = "silero-vad==6.2.3"
SILERO_SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"


def environment(workdir: Path, **extra: str) -> dict[str, str]:
    env = os.environ | {"PYTHONPATH": str(ROOT), "API_TOKEN": TOKEN, "STREAM_API_KEY": "k", "STREAM_API_SECRET": "s"}
    env |= {"OPENAI_API_KEY": "sk-bench", "TRANSCRIPT_DIR": str(workdir / "transcripts"), "LOG_LEVEL": "error"}
    env |= {"MAX_CONCURRENT_INTERVIEWS": "10000", "VAD_MODEL_DIR": vad_model_dir(), "ORT_DISABLE_TELEMETRY": "1"}
    env |= NO_INTERNET  # Stream's and OpenAI's HTTPS, where no stand-in is set, goes to a dead loopback proxy
    env.pop("GCS_BUCKET", None)
    return env | extra


def vad_model_dir() -> str:
    """Silero VAD for the Runner's default multi-speaker filter (the service needs none), from the `silero-vad`
    wheel on PyPI; its own dependencies, torch among them, are not needed."""
    target = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "interview-agent-vad"
    model = target / "silero_vad.onnx"
    if model.exists() and hashlib.sha256(model.read_bytes()).hexdigest() == SILERO_SHA256:
        return str(target)
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download:
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", download]
        subprocess.run([*pip, SILERO_WHEEL], check=True)
        with zipfile.ZipFile(next(Path(download).glob("silero_vad-*.whl"))) as wheel:
            data = wheel.read("silero_vad/data/silero_vad.onnx")
    assert hashlib.sha256(data).hexdigest() == SILERO_SHA256, "the silero-vad wheel's model changed"
    model.write_bytes(data)
    return str(target)


def die_with_parent() -> None:
    """In a child, before exec: Linux sends it SIGTERM when the bench dies, however it dies (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def cores() -> tuple[set[int] | None, set[int] | None]:
    """(the server's core, every other process's cores) where this process may use more than one core, else None:
    the server measured alone on its core, the stand-ins and the rig on the others."""
    available = sorted(os.sched_getaffinity(0))
    return ({available[0]}, set(available[1:])) if len(available) > 1 else (None, None)


def cpu_seconds(pid: int) -> float:
    """A process's user + system CPU time so far, every thread of it (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """One `python -m bench.serve KIND PORT` process."""

    def __init__(self, kind: str, workdir: Path, core: set[int] | None = None, **env: str) -> None:
        self.kind, self.port = kind, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "bench.serve", kind, str(self.port)]
        self.started = time.perf_counter()
        log = (workdir / f"{kind}-{self.port}.log").open("w")

        def before_exec() -> None:
            die_with_parent()
            if core:  # on a core of its own, away from the stand-ins and the rig
                os.sched_setaffinity(0, core)

        self.process = subprocess.Popen(
            command, cwd=workdir, env=environment(workdir, **env), stdout=log, stderr=log, preexec_fn=before_exec
        )

    def wait_ready(self, timeout: float = 120) -> float:
        """Seconds from process start to `/ready` 200."""
        while time.perf_counter() - self.started < timeout:
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.TransportError:
                pass
            time.sleep(0.01)
        raise TimeoutError(f"{self.kind} did not become ready")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def slope(points: list[tuple[int, float]]) -> float:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"
