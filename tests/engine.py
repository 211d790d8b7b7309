"""The container engine for test_container.py and test_compose.py, and the image they share: built once a session.

The image is built from a clean checkout (the tracked files, as `git clone` gives them) by `podman-compose build`,
the build half of a developer's `podman-compose up --build`, and tagged IMAGE as well; where only docker runs, by
`docker build`. Building it once saves the suite a second build of about two minutes on 2 cores.
"""

import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import NO_INTERNET, ROOT, newcomers_env

ENGINE = shutil.which("podman") or shutil.which("docker")
IMAGE = "localhost/interview-agent:test"
COMPOSE_IMAGE = "interview-agent"  # compose.yaml's `image:` for the service it builds
COMPOSE = [sys.executable, "-m", "podman_compose"]
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def engine(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert ENGINE
    env = {"BUILDAH_ISOLATION": "chroot", "PATH": PATH}
    return subprocess.run([ENGINE, *args], capture_output=True, text=True, timeout=timeout, check=check, env=env)


def engine_works() -> str | None:
    if not ENGINE:
        return "no container engine (podman or docker) on this machine; .ci/run prepares podman"
    probe = subprocess.run([ENGINE, "info"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"{ENGINE} cannot run here: {probe.stderr.strip()[:200]}"


def compose(project: Path, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """podman-compose in `project`; its builds in docker format, as `docker compose` builds (HEALTHCHECK kept)."""
    environment = {"PATH": PATH, "BUILDAH_ISOLATION": "chroot"}
    command = [*COMPOSE, "--podman-build-args=--pull=never --format=docker", *args]
    return subprocess.run(command, cwd=project, env=environment | env, capture_output=True, text=True, timeout=timeout)


def clean_checkout(parent: Path) -> Path:
    """What `git clone` gives (the tracked files), plus a .env copied from .env.example with the four values."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    project = parent / f"ia{uuid.uuid4().hex[:8]}"  # also the compose project's name, unique to this session
    for name in files:
        if (ROOT / name).exists():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, project / name)
    (project / ".env").write_text(newcomers_env() + "".join(f"{key}={value}\n" for key, value in NO_INTERNET.items()))
    return project


@dataclass(frozen=True)
class BuiltImage:
    id: str  # what the tests run: a tag another session retags cannot change it
    checkout: Path  # the clean checkout it was built from, where `podman-compose build` ran


def build_image(parent: Path) -> BuiltImage:
    reason = engine_works()
    if reason:
        pytest.skip(reason)
    assert ENGINE
    checkout = clean_checkout(parent)
    if ENGINE.endswith("podman"):
        built, name = compose(checkout, "build", timeout=1500), COMPOSE_IMAGE
    else:
        built, name = engine("build", "-t", IMAGE, str(checkout), timeout=1500, check=False), IMAGE
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    image_id = engine("image", "inspect", name, "--format", "{{.Id}}").stdout.strip()
    engine("tag", image_id, IMAGE)
    return BuiltImage(id=image_id, checkout=checkout)
