"""The service under OpenAI's faults, through the real `openai.Realtime` plugin against the WebRTC stand-in.

OpenAI dropping the connection, never answering the call, transcribing the candidate's last words after the call
ended, failing a response or sending an error event; and what the service lets OpenAI hear and how it configures the
session. The Stream side is the in-process fake edge (tests/fakes.py).
"""

import asyncio
import gc
import json
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import numpy as np
import pytest
from aiortc.mediastreams import VideoStreamTrack
from getstream.video.rtc import PcmData
from vision_agents.core.edge.events import AudioReceivedEvent, TrackAddedEvent
from vision_agents.core.edge.types import Participant, TrackType
from vision_agents.core.llm.events import LLMErrorEvent

from bench.speech import FRAME, RATE, speech_frame
from tests.conftest import (
    AUTH,
    BUCKET,
    ROOT,
    TOKEN,
    free_port,
    invite_body,
    running,
    stored_transcript,
    transcript_name,
)
from tests.fakes import CALLS, CANDIDATE, CallScript, FakeEdge, wait_until
from tests.standins.openai_realtime import Call, RealtimeStandIn, sends_video
from tests.test_reliability import wait_until_ready

RECRUITER = Participant(original=None, user_id="recruiter-1", id="recruiter-1-session")
SECRET = "my salary at Initech was 123456 and I was fired for"  # what a failed response or an error may carry


@pytest.fixture
async def standin(monkeypatch):
    async with RealtimeStandIn() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)  # where the plugin's AsyncOpenAI client looks
        yield server


async def start(client: Any, call_id: str, **overrides: Any) -> dict[str, Any]:
    body = invite_body(call_id, **overrides)
    assert body["candidate_user_id"] == CANDIDATE.user_id  # the fake edge's candidate
    response = await client.post("/interviews", json=body)
    assert response.status_code == 202, response.text
    return response.json()


async def greeted(standin: RealtimeStandIn, call_id: str) -> FakeEdge:
    """The call's edge once the candidate was heard and the interviewer asked OpenAI (its own call) to greet them."""
    edge, deadline = await CALLS.wait_joined(call_id, timeout=20), time.monotonic() + 20
    while "response.create" not in openai_call(standin, edge).event_types():
        assert time.monotonic() < deadline, f"the interviewer never greeted the candidate on {call_id}"
        edge.candidate_speaks(frames=5)
        await asyncio.sleep(0.1)
    return edge


def openai_call(standin: RealtimeStandIn, edge: FakeEdge) -> Call:
    """The stand-in's side of this interview's OpenAI connection."""
    call = standin.call_for(edge.agent.llm.rtc.pc.localDescription.sdp)
    assert call is not None
    return call


async def speak(edge: FakeEdge, who: Participant, seconds: float, voiced: bool = True) -> None:
    """20 ms frames from `who` in real time, as Stream delivers them: real speech, or digital silence."""
    for index in range(int(seconds * RATE / FRAME)):
        samples = speech_frame(index) if voiced else np.zeros(FRAME, dtype=np.int16)
        pcm = PcmData(sample_rate=RATE, format="s16", samples=samples.copy(), channels=1)
        edge.events.send(AudioReceivedEvent(pcm_data=pcm, participant=who))
        await asyncio.sleep(FRAME / RATE)


def errors_naming(caplog: Any, interview_id: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "interview_agent" and r.levelno == logging.ERROR and interview_id in r.getMessage()
    ]


async def test_openai_dropping_the_connection_ends_the_interview_at_once_as_error(standin, make_settings, caplog):
    caplog.set_level(logging.INFO)
    async with running(make_settings(), make_llm=None) as (client, _):
        accepted = await start(client, "of-drop")
        edge = await greeted(standin, "of-drop")
        standin.interviewer_says("Hello Ada, welcome. Tell us about yourself.")
        await wait_until(lambda: len(edge.messages()) == 1)

        dropped = time.monotonic()
        await standin.drop_connection()
        doc = await stored_transcript(None, accepted, timeout=15)
        took = time.monotonic() - dropped

    assert took < 5, f"the interview went on for {took:.1f} s after OpenAI dropped the connection"
    assert doc["end_reason"] == "error", doc
    assert "OpenAI" in doc["error"] and "lost" in doc["error"], doc["error"]
    assert [m["text"] for m in doc["messages"]] == ["Hello Ada, welcome. Tell us about yourself."]
    assert len(errors_naming(caplog, accepted["interview_id"])) == 1, errors_naming(caplog, accepted["interview_id"])


async def test_a_call_openai_never_answers_ends_as_error_and_frees_the_call(standin, make_settings):
    standin.hang = True
    async with running(make_settings(), make_llm=None) as (client, launcher):
        accepted = await start(client, "of-hang")
        invited = time.monotonic()
        doc = await stored_transcript(None, accepted, timeout=45)
        took = time.monotonic() - invited
        await wait_until(lambda: launcher.get_session(accepted["interview_id"]) is None, timeout=1)
        standin.hang = False
        again = await start(client, "of-hang")  # 202, not 409: nothing of the first interview holds the call
        (await greeted(standin, "of-hang")).end_call()
        await stored_transcript(None, again, timeout=15)

    assert doc["end_reason"] == "error" and doc["error"], doc
    assert took < 30, f"an unanswered call held the interview for {took:.1f} s"
    assert standin.hanging == 2, f"{standin.hanging} calls left unanswered: the client is bounded to one retry"


async def test_the_candidates_last_words_after_the_call_ended_are_kept(standin, make_settings):
    async with running(make_settings(), make_llm=None) as (client, _):
        accepted = await start(client, "of-last")
        edge = await greeted(standin, "of-last")
        llm = edge.agent.llm
        standin.interviewer_says("Any questions for us?")
        await wait_until(lambda: len(edge.messages()) == 1)
        edge.candidate_speaks(frames=25)
        await wait_until(lambda: llm._current_participant is not None)  # who is speaking: from the audio frames
        commits_before = standin.event_types().count("input_audio_buffer.commit")

        edge.end_call()
        await wait_until(lambda: standin.event_types().count("input_audio_buffer.commit") > commits_before, timeout=2)
        await asyncio.sleep(1)
        standin.candidate_said("Yes: when can I start?")  # OpenAI's transcription of the turn the call cut short
        doc = await stored_transcript(None, accepted, timeout=15)

    assert doc["version"] == 5 and doc["end_reason"] == "call_ended" and doc["error"] is None, doc
    assert doc["candidate_user_id"] == CANDIDATE.user_id
    assert [(m["role"], m["text"]) for m in doc["messages"]] == [
        ("interviewer", "Any questions for us?"),
        ("candidate", "Yes: when can I start?"),
    ]


@pytest.mark.parametrize("fault", ["response.done", "error"])
async def test_a_failed_response_or_an_error_event_logs_no_transcript_text(fault, standin, make_settings, caplog):
    caplog.set_level(logging.DEBUG)  # the root logger: every library's records too
    call_id = f"of-{fault.replace('.', '-')}"
    async with running(make_settings(), make_llm=None) as (client, _):
        accepted = await start(client, call_id)
        edge = await greeted(standin, call_id)
        errors: list[LLMErrorEvent] = []

        @edge.agent.events.subscribe
        async def on_error(event: LLMErrorEvent) -> None:  # what the plugin's own handling tells the Agent
            errors.append(event)

        if fault == "response.done":
            standin.fail_response(f"Thanks Ada. You said {SECRET}")
        else:
            standin.error_event("invalid_value", f"Conversation item rejected: {SECRET}")
        await wait_until(lambda: errors, timeout=5)
        standin.interviewer_says("Let us go on.")  # the session goes on
        await wait_until(lambda: "Let us go on." in edge.messages())
        edge.end_call()
        await stored_transcript(None, accepted, timeout=15)
        gc.collect()  # an unretrieved task exception is logged when the task is collected
        await asyncio.sleep(0.1)

    leaked = [r for r in caplog.records if SECRET in r.getMessage() or SECRET in (r.exc_text or "")]
    assert not leaked and SECRET not in caplog.text, [(r.name, r.levelname, r.getMessage()[:200]) for r in leaked]
    assert [error.context for error in errors] == [fault] and SECRET not in str(errors[0].error)
    ours = [r.getMessage() for r in caplog.records if r.name == "interview_agent"]
    naming = [line for line in ours if accepted["interview_id"] in line and fault in line]
    assert len(naming) == 1, ours


async def test_only_the_candidates_audio_reaches_openai(standin, make_settings):
    call_id = "of-recruiter"
    CALLS.scripts[call_id] = CallScript(candidate_present=False)  # the recruiter is there first, alone
    async with running(make_settings(), make_llm=None) as (client, _):
        accepted = await start(client, call_id)
        edge = await CALLS.wait_joined(call_id, timeout=20)
        edge.connection.joined.set()  # a participant (the recruiter) is on the call
        await asyncio.sleep(1)
        voiced_before = standin.voiced_frames_in

        await speak(edge, RECRUITER, seconds=2)
        await asyncio.sleep(1)  # what was sent is through the agent's track by then
        voiced_with_recruiter = standin.voiced_frames_in - voiced_before
        greeted_for_recruiter = "response.create" in standin.event_types()

        # The candidate joins and speaks; the recruiter's track stays on, silent.
        recruiter_silence = asyncio.create_task(speak(edge, RECRUITER, seconds=6, voiced=False))
        await speak(edge, CANDIDATE, seconds=4)
        await wait_until(lambda: "response.create" in standin.event_types(), timeout=5)
        await asyncio.sleep(0.5)
        voiced_with_candidate = standin.voiced_frames_in - voiced_before - voiced_with_recruiter
        await speak(edge, RECRUITER, seconds=0.5)  # the recruiter spoke last, then OpenAI transcribes the candidate
        standin.candidate_said("I led the payments team.")
        await wait_until(lambda: "I led the payments team." in edge.messages())
        recruiter_silence.cancel()
        edge.end_call()
        doc = await stored_transcript(None, accepted, timeout=15)

    assert standin.audio_frames > 0
    assert voiced_with_recruiter == 0, f"{voiced_with_recruiter} frames of the recruiter's speech reached OpenAI"
    assert not greeted_for_recruiter, "the interviewer greeted the recruiter"
    assert voiced_with_candidate > 25, f"only {voiced_with_candidate} voiced frames of the candidate reached OpenAI"
    lines = [(m["role"], m["text"]) for m in doc["messages"]]
    assert lines == [("candidate", "I led the payments team.")]


async def test_two_interviews_at_once_each_send_their_own_instructions_and_no_video(standin, make_settings):
    """The plugin mutates the session dict it is given: each interviewer must have its own."""
    async with running(make_settings(), make_llm=None) as (client, _):
        first = await start(client, "of-cfg-a", candidate_name="Ada Lovelace", language="es")
        second = await start(client, "of-cfg-b", candidate_name="Grace Hopper")
        await wait_until(lambda: len(standin.offers) == 2, timeout=20)
        for call_id in ("of-cfg-a", "of-cfg-b"):
            (await greeted(standin, call_id)).end_call()
        for accepted in (first, second):
            await stored_transcript(None, accepted, timeout=15)

    assert all(session["audio"]["input"]["transcription"].get("model") for session in standin.offers)
    names = [("Ada Lovelace" in s["instructions"], "Grace Hopper" in s["instructions"]) for s in standin.offers]
    assert sorted(names) == [(False, True), (True, False)], names
    # Each interview's language, in its transcription and told to its interviewer; the default is English.
    languages = {
        s["instructions"].count("Ada Lovelace"): s["audio"]["input"]["transcription"]["language"]
        for s in standin.offers
    }
    assert languages == {1: "es", 0: "en"}, languages
    for session in standin.offers:
        assert f'"language":"{session["audio"]["input"]["transcription"]["language"]}"' in session["instructions"]
    assert not any(sends_video(sdp) for sdp in standin.offer_sdps)


async def test_a_real_process_at_debug_logs_no_instructions_transcript_or_secret(standin, tmp_path):
    """LOG_LEVEL=debug, the real plugin: the OpenAI SDK's request log (the session's instructions), the plugin's
    session events, a failed response and an error event carrying what the candidate said: none of it in the log."""
    port, log = free_port(), tmp_path / "service.log"
    env = os.environ | {"PYTHONPATH": str(ROOT), "API_TOKEN": TOKEN, "STREAM_API_KEY": "k", "STREAM_API_SECRET": "s"}
    env |= {"OPENAI_API_KEY": "sk-secret-key", "OPENAI_BASE_URL": standin.url, "TRANSCRIPT_DIR": str(tmp_path / "t")}
    env |= {"HOST": "127.0.0.1", "PORT": str(port), "LOG_LEVEL": "debug"}
    env.pop("GCS_BUCKET", None)
    with log.open("w") as output:
        command = [sys.executable, str(ROOT / "tests" / "serve_with_fake_edge.py")]
        process = subprocess.Popen(command, env=env, cwd=tmp_path, stderr=output)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=AUTH) as client:
            await wait_until_ready(client)
            body = invite_body("of-debug-log", candidate_name="Grace Hopper")
            accepted = (await client.post("/interviews", json=body)).json()
            await wait_until(lambda: "response.create" in standin.event_types(), timeout=30)
            standin.interviewer_says(f"Welcome Grace. {SECRET}")
            standin.fail_response(f"Thanks Grace. You said {SECRET}")
            standin.error_event("invalid_value", f"Conversation item rejected: {SECRET}")
            await asyncio.sleep(1)
            process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(process.wait, 20)
    finally:
        process.kill()
    doc = await stored_transcript(tmp_path / "t", accepted, timeout=1)
    assert [m["text"] for m in doc["messages"]] == [f"Welcome Grace. {SECRET}"]  # the transcript has it, the log not
    logged = log.read_text()
    assert "GET /ready" in logged  # LOG_LEVEL=debug: the log is not empty
    instructions = standin.offers[0]["instructions"]
    for secret in (SECRET, "Grace", TOKEN, "sk-secret-key", instructions.splitlines()[0]):
        assert secret not in logged, secret
    ours = [line for line in logged.splitlines() if accepted["interview_id"] in line]
    assert any("response.done" in line for line in ours) and any("error" in line for line in ours), ours


async def test_a_process_killed_mid_interview_leaves_it_crashed_with_every_line_and_the_next_start_stores_it(
    standin, gcs, tmp_path
):
    """SIGKILL (an OOM kill, a lost node) to a real service mid-interview: the transcript is on disk with every line
    said before, `crashed`; the next start on the same TRANSCRIPT_DIR stores it in GCS like any other transcript."""
    port, transcripts = free_port(), tmp_path / "t"
    env = os.environ | {"PYTHONPATH": str(ROOT), "API_TOKEN": TOKEN, "STREAM_API_KEY": "k", "STREAM_API_SECRET": "s"}
    env |= {"OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": standin.url, "TRANSCRIPT_DIR": str(transcripts)}
    env |= {"HOST": "127.0.0.1", "PORT": str(port), "GCS_BUCKET": BUCKET}
    command = [sys.executable, str(ROOT / "tests" / "serve_with_fake_edge.py")]
    service = subprocess.Popen(command, env=env, cwd=tmp_path, stderr=subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=AUTH) as client:
            await wait_until_ready(client)
            accepted = (await client.post("/interviews", json=invite_body("of-killed"))).json()
            await wait_until(lambda: "response.create" in standin.event_types(), timeout=30)
            standin.interviewer_says("Welcome Ada. Tell me about the ledger.")
            standin.candidate_said("We sharded it by account.")
            on_disk = transcripts / transcript_name(accepted)
            await wait_until(lambda: on_disk.exists() and len(json.loads(on_disk.read_text())["messages"]) == 2)
            service.kill()
            await asyncio.to_thread(service.wait, 10)
    finally:
        service.kill()
    crashed = json.loads(on_disk.read_text())
    assert crashed["end_reason"] == "crashed" and crashed["version"] == 5 and crashed["error"] is None
    assert crashed["interview_id"] == accepted["interview_id"] and crashed["call_id"] == "of-killed"
    assert [(m["role"], m["text"]) for m in crashed["messages"]] == [
        ("interviewer", "Welcome Ada. Tell me about the ledger."),
        ("candidate", "We sharded it by account."),
    ]
    assert not list(transcripts.rglob("*.tmp"))

    service = subprocess.Popen(command, env=env, cwd=tmp_path, stderr=subprocess.DEVNULL)
    try:
        stored = await stored_transcript(gcs, accepted, timeout=30)  # offered with the leftovers, in the background
        await wait_until(lambda: not on_disk.exists())
    finally:
        service.kill()
    assert stored == crashed


async def test_the_interviewer_never_watches_video_whatever_an_edge_announces(standin, make_settings, monkeypatch):
    """With an edge that does hand over a camera (not the service's own, which subscribes to audio alone), the
    plugin would renegotiate: a second OpenAI session carrying the camera. The interviewer never watches."""
    monkeypatch.setattr(FakeEdge, "add_track_subscriber", lambda self, track_id: VideoStreamTrack())
    async with running(make_settings(), make_llm=None) as (client, _):
        accepted = await start(client, "of-camera")
        edge = await greeted(standin, "of-camera")
        edge.events.send(TrackAddedEvent(track_id="camera-1", track_type=TrackType.VIDEO, participant=CANDIDATE))
        await asyncio.sleep(3)  # a renegotiation would have posted its offer by then
        edge.end_call()
        await stored_transcript(None, accepted, timeout=15)
    assert len(standin.offers) == 1 and not any(sends_video(sdp) for sdp in standin.offer_sdps)
