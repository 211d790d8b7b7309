"""The image as the platform runs it: built (once a session, from a clean checkout) and started for real (podman here,
docker where present)."""

import json
import subprocess
import time
import uuid
from pathlib import Path

import httpx

from tests.conftest import AUTH, NO_INTERNET, ROOT, TOKEN, free_port, invite_body
from tests.engine import ENGINE, engine


def test_dockerfile_is_hadolint_clean():
    result = subprocess.run(["hadolint", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_container_serves_stores_and_stops(built_image, capsys):
    image = built_image.id  # built once a session from a clean checkout (tests/engine.py), shared with test_compose.py
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
