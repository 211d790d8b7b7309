"""The image as the platform runs it: built and started for real (podman here, docker where present)."""

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import AUTH, NO_INTERNET, ROOT, TOKEN, free_port, invite_body

ENGINE = shutil.which("podman") or shutil.which("docker")
IMAGE = "localhost/interview-agent:test"


def engine(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert ENGINE
    env = {"BUILDAH_ISOLATION": "chroot", "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    return subprocess.run([ENGINE, *args], capture_output=True, text=True, timeout=timeout, check=check, env=env)


def test_dockerfile_is_hadolint_clean():
    result = subprocess.run(["hadolint", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def engine_works() -> str | None:
    if not ENGINE:
        return "no container engine (podman or docker) on this machine; .ci/run prepares podman"
    probe = subprocess.run([ENGINE, "info"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"{ENGINE} cannot run here: {probe.stderr.strip()[:200]}"


@pytest.fixture(scope="module")
def image():
    reason = engine_works()
    if reason:
        pytest.skip(reason)
    pull = ["--pull=never", "--format=docker"] if ENGINE.endswith("podman") else []
    build = engine("build", *pull, "-t", IMAGE, str(ROOT), timeout=1500, check=False)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return IMAGE


def test_container_serves_stores_and_stops(image, capsys):
    size = int(engine("image", "inspect", image, "--format", "{{.Size}}").stdout.strip())
    with capsys.disabled():
        print(f"\nimage size: {size / 1e6:.0f} MB ({ENGINE})")
    name, volume, port = f"ia-{uuid.uuid4().hex[:8]}", f"ia-{uuid.uuid4().hex[:8]}", free_port()
    env = {"STREAM_API_KEY": "k", "STREAM_API_SECRET": "s", "OPENAI_API_KEY": "sk", "API_TOKEN": TOKEN} | NO_INTERNET
    env_args = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    engine(
        "run",
        "-d",
        "--name",
        name,
        "-p",
        f"127.0.0.1:{port}:8000",
        "-v",
        f"{volume}:/data/transcripts",
        *env_args,
        image,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, engine("logs", name, check=False).stderr[-3000:]
            time.sleep(0.5)
        assert httpx.get(f"{base}/health").status_code == 200
        assert httpx.post(f"{base}/interviews", json=invite_body("box-1")).status_code == 401
        accepted = httpx.post(f"{base}/interviews", json=invite_body("box-1"), headers=AUTH)
        assert accepted.status_code == 202, accepted.text
        assert engine("exec", name, "id", "-u").stdout.strip() != "0"

        mountpoint = Path(engine("volume", "inspect", volume, "--format", "{{.Mountpoint}}").stdout.strip())
        documents: list[Path] = []
        deadline = time.monotonic() + 60
        while not documents and time.monotonic() < deadline:  # Stream is out of reach: the join fails, recorded
            documents = list((mountpoint / "default" / "box-1").glob("*.json"))
            time.sleep(0.5)
        assert len(documents) == 1 and json.loads(documents[0].read_text())["end_reason"] == "error"

        started = time.monotonic()
        engine("kill", "--signal", "TERM", name)
        engine("wait", name, timeout=30)
        assert time.monotonic() - started < 10
    finally:
        engine("rm", "-f", name, check=False)
        engine("volume", "rm", "-f", volume, check=False)
