"""Shared test machinery: the Silero VAD model, a real GCS emulator, and the service with fake providers."""

import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes import CALLS, FakeEdge, FakeRealtime, wait_until

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SILERO_WHEEL = "silero-vad==6.2.3"
SILERO_SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"
BUCKET = "interviews-test"


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GcsEmulator:
    """`gcp-storage-emulator` as a subprocess on 127.0.0.1: real JSON API, stoppable to simulate an outage."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--in-memory", "--default-bucket", BUCKET]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/", timeout=0.5)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("gcp-storage-emulator did not start")

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
def gcs() -> Any:
    emulator = GcsEmulator()
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{emulator.port}"
    emulator.start()
    yield emulator
    emulator.stop()


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
    settings: Any, make_llm: Callable[[], Any] = FakeRealtime
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The real app (real AgentLauncher, real FastAPI) with the fake edge, its lifespan running.

    `make_llm=None` keeps the service's own `openai.Realtime`; the default is the in-process fake.
    """
    from main import create_app

    app = create_app(settings, make_edge=FakeEdge, make_llm=make_llm)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://service", headers=AUTH) as client,
    ):
        await wait_until(lambda: app.state.interviews.ready, timeout=30)
        yield client, app.state.interviews


@pytest.fixture(autouse=True)
def fresh_calls() -> None:
    CALLS.clear()


def invite_body(call_id: str, **overrides: Any) -> dict[str, Any]:
    body = {"call_id": call_id, "candidate_name": "Ada Lovelace", "job_title": "Backend Engineer"}
    return body | {"questions": ["Tell us about a system you scaled.", "How do you test async code?"]} | overrides
