"""No transcript is lost and no call gets two interviewers: outages, crashes, shutdown, webhooks, replicas, races."""

import asyncio
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiohttp import web

from tests.conftest import AUTH, BUCKET, ROOT, TOKEN, free_port, invite_body, running
from tests.fakes import CALLS, wait_until
from tests.test_interviews import stored_transcript


async def test_gcs_outage_loses_and_duplicates_nothing(gcs, make_settings):
    settings = make_settings(gcs_bucket=BUCKET, upload_retry_seconds=0.5, ship_interval_seconds=0.5)
    async with running(settings) as (client, interviews):
        gcs.stop()
        uris = []
        for n in range(3):
            uris.append((await client.post("/interviews", json=invite_body(f"outage-{n}"))).json()["transcript_uri"])
            edge = await CALLS.wait_joined(f"outage-{n}")
            edge.llm.say(f"Question {n}")
            await wait_until(edge.messages)
            edge.end_call()
        await wait_until(lambda: interviews.store.backlog() == 3)
        ready = (await client.get("/ready")).json()
        assert ready["ready"] and ready["transcript_backlog"] == 3  # still serving, and honest about it
        assert (await client.post("/interviews", json=invite_body("outage-live"))).status_code == 202

        await asyncio.sleep(1.5)  # several failed rounds
        gcs.start()
        docs = [await stored_transcript(gcs, uri, timeout=15) for uri in uris]
        await wait_until(lambda: interviews.store.backlog() == 0)
        (await CALLS.wait_joined("outage-live")).end_call()
    names = [name for name in gcs.objects() if name.split("/")[2].startswith("outage-")]
    assert len(names) == len(set(names)) == 4
    assert [d["messages"][0]["text"] for d in docs] == ["Question 0", "Question 1", "Question 2"]


async def test_crash_leftovers_are_finalised_and_shipped(make_settings):
    settings = make_settings()
    spool = settings.transcript_dir / ".spool"
    spool.mkdir(parents=True)
    started = datetime.now(UTC) - timedelta(minutes=3)
    in_progress = {"version": 1, "interview_id": "crashed-1", "call_id": "crash-1", "call_type": "default"}
    in_progress |= {"candidate_name": "Ada", "job_title": "Engineer", "started_at": started.isoformat()}
    in_progress |= dict.fromkeys(["ended_at", "duration_seconds", "end_reason", "error"])
    in_progress["messages"] = [{"role": "interviewer", "speaker_id": "ai", "text": "Hello", "at": started.isoformat()}]
    (spool / "crashed-1.partial").write_text(json.dumps(in_progress))
    (spool / "crashed-1.tmp").write_text('{"half a write')  # a write the crash cut short: ignored

    async with running(settings):
        stored = settings.transcript_dir / "default" / "crash-1" / "crashed-1.json"
        await wait_until(stored.exists)
    doc = json.loads(stored.read_text())
    assert doc["end_reason"] == "interrupted" and doc["messages"] == in_progress["messages"]
    assert 170 < doc["duration_seconds"] < 200
    assert list(spool.glob("*.json")) == list(spool.glob("*.partial")) == []


async def test_running_transcripts_reach_disk_within_five_seconds(make_settings):
    settings = make_settings()
    async with running(settings) as (client, _):
        accepted = (await client.post("/interviews", json=invite_body("flush-1"))).json()
        edge = await CALLS.wait_joined("flush-1")
        edge.llm.say("Something worth keeping.")
        partial = settings.transcript_dir / ".spool" / f"{accepted['interview_id']}.partial"
        await wait_until(lambda: partial.exists() and "worth keeping" in partial.read_text(), timeout=12)
        edge.end_call()


async def test_shutdown_stores_every_live_transcript(make_settings):
    settings = make_settings(shutdown_grace_seconds=8)
    async with running(settings) as (client, interviews):
        uris = [
            (await client.post("/interviews", json=invite_body(f"down-{n}"))).json()["transcript_uri"] for n in range(4)
        ]
        for n in range(4):
            await CALLS.wait_joined(f"down-{n}")
        started = time.monotonic()
    elapsed = time.monotonic() - started
    assert elapsed < settings.shutdown_grace_seconds
    assert not interviews.ready
    docs = [await stored_transcript(None, uri, timeout=0.1) for uri in uris]
    assert {d["end_reason"] for d in docs} == {"stopped"}


async def test_sigterm_to_a_real_process(tmp_path, vad_model_dir):
    port = free_port()
    env = os.environ | {"PYTHONPATH": str(ROOT), "API_TOKEN": TOKEN, "STREAM_API_KEY": "k", "STREAM_API_SECRET": "s"}
    env |= {"OPENAI_API_KEY": "sk", "VAD_MODEL_DIR": str(vad_model_dir), "TRANSCRIPT_DIR": str(tmp_path / "t")}
    env.pop("GCS_BUCKET", None)
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "serve_with_fakes.py"), str(port)], env=env, cwd=tmp_path
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=AUTH) as client:
            await wait_until_ready(client)
            uris = [
                (await client.post("/interviews", json=invite_body(f"term-{n}"))).json()["transcript_uri"]
                for n in range(3)
            ]
            for n in range(3):
                await wait_until(lambda n=n: in_progress(client, f"term-{n}"), timeout=10)
            process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            while process.poll() is None and time.monotonic() - started < 15:
                await asyncio.sleep(0.05)
            elapsed = time.monotonic() - started
    finally:
        process.kill()
    # uvicorn re-raises the signal once its graceful shutdown is done: exit by SIGTERM is the clean ending
    assert process.returncode in (0, -signal.SIGTERM) and elapsed < 8, (process.returncode, elapsed)
    docs = [await stored_transcript(None, uri, timeout=0.1) for uri in uris]
    assert {d["end_reason"] for d in docs} == {"stopped"}


async def wait_until_ready(client: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if (await client.get("/ready")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError("service did not become ready")


def in_progress(client: httpx.AsyncClient, call_id: str) -> bool:
    response = httpx.get(f"{str(client.base_url).rstrip('/')}/interviews/{call_id}", headers=AUTH)
    return response.status_code == 200 and response.json()["status"] == "in_progress"


class Receiver:
    """A webhook receiver on 127.0.0.1 that checks signatures; it can fail the first deliveries with 500."""

    def __init__(self, secret: str, failures: int = 0) -> None:
        self.secret, self.failures = secret.encode(), failures
        self.accepted: list[dict] = []
        self.attempts = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        raw = await request.read()
        expected = "sha256=" + hmac.new(self.secret, raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Signature-256", "")):
            return web.Response(status=401)
        if self.attempts <= self.failures:
            return web.Response(status=500)
        self.accepted.append(json.loads(raw))
        return web.Response(status=204)

    @asynccontextmanager
    async def serving(self, port: int):
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield
        finally:
            await runner.cleanup()


async def one_finished_interview(client: httpx.AsyncClient, call_id: str) -> str:
    uri = (await client.post("/interviews", json=invite_body(call_id))).json()["transcript_uri"]
    edge = await CALLS.wait_joined(call_id)
    edge.llm.say("Welcome.")
    await wait_until(edge.messages)
    edge.end_call()
    return uri


@pytest.mark.parametrize("failures", [0, 2])
async def test_webhook_is_signed_and_delivered_once(make_settings, failures):
    port, secret = free_port(), "webhook-secret"
    receiver = Receiver(secret, failures)
    settings = make_settings(webhook_url=f"http://127.0.0.1:{port}/hook", webhook_secret=secret)
    async with receiver.serving(port), running(settings) as (client, _):
        uri = await one_finished_interview(client, f"hook-{failures}")
        await wait_until(lambda: receiver.accepted, timeout=10)
        await asyncio.sleep(0.5)
    assert receiver.attempts == failures + 1 and len(receiver.accepted) == 1
    event = receiver.accepted[0]
    assert (
        event["event"] == "interview.ended" and event["transcript_uri"] == uri and event["end_reason"] == "call_ended"
    )
    assert event["call_id"] == f"hook-{failures}" and event["message_count"] == 1 and event["duration_seconds"] >= 0
    assert abs(datetime.fromisoformat(event["sent_at"]) - datetime.now(UTC)) < timedelta(seconds=30)


async def test_webhook_receiver_down_does_not_delay_the_transcript(make_settings):
    settings = make_settings(webhook_url=f"http://127.0.0.1:{free_port()}/hook", webhook_secret="s")
    async with running(settings) as (client, _):
        uri = await one_finished_interview(client, "hook-down")
        started = time.monotonic()
        doc = await stored_transcript(None, uri, timeout=5)
        # the five deliveries alone would take 15 s of backoff: the transcript does not wait for them
        assert time.monotonic() - started < 5 and doc["end_reason"] == "call_ended"


async def test_concurrent_invites_for_one_call_get_one_202(make_settings):
    async with running(make_settings(max_concurrent_interviews=50)) as (client, _):
        responses = await asyncio.gather(*(client.post("/interviews", json=invite_body("race-1")) for _ in range(20)))
        codes = sorted(r.status_code for r in responses)
        (await CALLS.wait_joined("race-1")).end_call()
    assert codes == [202] + [409] * 19


@pytest.fixture
def redis_url():
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    server.terminate()
    server.wait()


async def test_two_replicas_share_calls_through_redis(make_settings, redis_url, tmp_path):
    first = make_settings(redis_url=redis_url, transcript_dir=tmp_path / "a")
    second = make_settings(redis_url=redis_url, transcript_dir=tmp_path / "b")
    async with running(first) as (a, _), running(second) as (b, _):
        accepted = await a.post("/interviews", json=invite_body("shared-1"))
        assert accepted.status_code == 202
        await CALLS.wait_joined("shared-1")
        assert (await b.post("/interviews", json=invite_body("shared-1"))).status_code == 409
        seen = await b.get("/interviews/shared-1")
        assert seen.status_code == 200 and seen.json()["interview_id"] == accepted.json()["interview_id"]
        assert (await b.delete("/interviews/shared-1")).status_code == 202
        doc = await stored_transcript(None, accepted.json()["transcript_uri"], timeout=10)
        assert doc["end_reason"] == "stopped"
        assert (await b.get("/interviews/shared-1")).status_code == 404
        assert (await b.post("/interviews", json=invite_body("shared-1"))).status_code == 202
        (await CALLS.wait_joined("shared-1")).end_call()
