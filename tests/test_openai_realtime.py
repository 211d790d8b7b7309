"""The real `openai.Realtime` plugin, configured by the service, against a WebRTC stand-in for OpenAI."""

import asyncio
import gc
import json
import logging
import time
import tracemalloc

import numpy as np
import pytest
from getstream.video.rtc import PcmData
from getstream.video.rtc.track_util import FrameResampler

from tests.conftest import ROOT, invite_body, running, stored_transcript
from tests.fakes import CALLS, wait_until
from tests.standins.openai_realtime import VOICED, RealtimeStandIn

QUESTIONS = ["Tell us about a system you scaled.", "How do you test async code?", "Why this team?"]


def leaves(tree: dict, path: str = "") -> dict:
    """A nested JSON object as {"a.b.c": value}."""
    flat = {}
    for key, value in tree.items():
        flat |= leaves(value, f"{path}{key}.") if isinstance(value, dict) else {f"{path}{key}": value}
    return flat


@pytest.fixture
async def standin(monkeypatch):
    async with RealtimeStandIn() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)  # where the plugin's AsyncOpenAI client looks
        yield server


async def test_session_config_and_the_interviewer_speaking_first(standin, make_settings):
    async with running(make_settings(), make_llm=None) as (client, _):
        body = invite_body("rt-config", candidate_name="Ada Lovelace", job_title="Staff Engineer", questions=QUESTIONS)
        assert (await client.post("/interviews", json=body)).status_code == 202
        await wait_until(lambda: "response.create" in standin.event_types(), timeout=20)
        spoke_first = list(standin.client_events)  # once the candidate is heard, before they said anything
        edge = await CALLS.wait_joined("rt-config")
        edge.end_call()

    session = standin.offers[0]
    assert session["model"].startswith("gpt-realtime") and session["audio"]["output"]["voice"]
    # The interviewer's session is `interviewer_session.json`, as sent to OpenAI: every value of the file arrived.
    configured = json.loads((ROOT / "interviewer_session.json").read_text())
    assert leaves(configured).items() <= leaves(session).items(), (leaves(configured), leaves(session))
    assert session["audio"]["input"]["turn_detection"] == {"type": "semantic_vad", "eagerness": "low"}
    assert session["audio"]["input"]["noise_reduction"] == {"type": "far_field"}
    assert session["audio"]["input"]["transcription"]["language"] and session["truncation"]["type"]
    instructions = session["instructions"]
    assert "Ada Lovelace" in instructions and "Staff Engineer" in instructions
    assert [instructions.index(q) for q in QUESTIONS] == sorted(instructions.index(q) for q in QUESTIONS)
    assert [event["type"] for event in spoke_first[-2:]] == ["conversation.item.create", "response.create"]
    assert spoke_first[-2]["item"]["content"][0]["text"].startswith("Greet the candidate")


async def test_the_wrap_up_reaches_openai_as_a_system_message_that_asks_no_response(standin, make_settings):
    """Told between turns, read at the interviewer's next one: no `response.create`, so a speaking candidate is never
    cut off. A lead longer than the interview: told once the interview began; the model ignores it: `time_limit`."""
    async with running(make_settings(max_interview_minutes=0.1, wrap_up_seconds=600), make_llm=None) as (client, _):
        accepted = (await client.post("/interviews", json=invite_body("rt-wrap"))).json()
        doc = await stored_transcript(None, accepted, timeout=30)

    events = standin.client_events
    greeting = [event["type"] for event in events].index("response.create")
    after = events[greeting + 1 :]
    assert [event["type"] for event in after] == ["conversation.item.create", "input_audio_buffer.commit"], after
    assert after[0]["item"]["role"] == "system" and "no new question" in after[0]["item"]["content"][0]["text"]
    assert doc["end_reason"] == "time_limit"


async def test_the_interviewers_voice_reaches_the_call(standin, make_settings):
    """The stand-in speaks for ~2 s after `response.create`: the greeting's audio reaches the agent's outgoing track."""
    async with running(make_settings(), make_llm=None) as (client, _):
        await client.post("/interviews", json=invite_body("rt-voice"))
        await wait_until(lambda: "response.create" in standin.event_types(), timeout=20)
        edge = await CALLS.wait_joined("rt-voice")
        voiced, deadline = 0, time.monotonic() + 5
        while voiced < 10 and time.monotonic() < deadline:
            frame = await edge.agent._audio_track.recv()  # what the agent publishes to the call, in real time
            voiced += int(np.abs(frame.to_ndarray().astype(np.int32)).max(initial=0)) > VOICED
        edge.end_call()

    assert voiced >= 10, f"{voiced} voiced frames of the interviewer's greeting reached the call"
    assert standin.voiced_frames_in == 0  # the fake candidate's microphone sends digital silence


async def test_a_scripted_exchange_lands_in_the_transcript(standin, make_settings):
    async with running(make_settings(), make_llm=None) as (client, _):
        accepted = (await client.post("/interviews", json=invite_body("rt-talk"))).json()
        await wait_until(lambda: "response.create" in standin.event_types(), timeout=20)
        edge = await CALLS.wait_joined("rt-talk")
        llm = edge.agent.llm

        standin.interviewer_says("Hello Ada, welcome. Tell us about yourself.")
        await wait_until(lambda: len(edge.messages()) == 1)
        edge.candidate_speaks(frames=25)
        await wait_until(lambda: llm._current_participant is not None)  # who is speaking: from the audio frames
        standin.candidate_said("I build distributed systems.")
        await wait_until(lambda: len(edge.messages()) == 2)
        standin.interviewer_says("Tell us about a system you scaled.")
        await wait_until(lambda: len(edge.messages()) == 3)
        edge.candidate_speaks(frames=25)
        standin.candidate_said("A payments ledger.")
        await wait_until(lambda: len(edge.messages()) == 4)
        frames_from_agent = standin.audio_frames
        edge.end_call()
        doc = await stored_transcript(None, accepted)

    assert frames_from_agent > 0
    assert [(m["role"], m["text"]) for m in doc["messages"]] == [
        ("interviewer", "Hello Ada, welcome. Tell us about yourself."),
        ("candidate", "I build distributed systems."),
        ("interviewer", "Tell us about a system you scaled."),
        ("candidate", "A payments ledger."),
    ]
    assert doc["end_reason"] == "call_ended"


async def test_openai_refusing_or_failing_ends_the_interview_with_error(standin, make_settings, caplog):
    caplog.set_level(logging.INFO)
    async with running(make_settings(), make_llm=None) as (client, launcher):
        before = {task for task in asyncio.all_tasks() if not task.done()}
        docs = {}
        for status in (401, 500):
            standin.refuse_with = status
            accepted = (await client.post("/interviews", json=invite_body(f"rt-{status}"))).json()
            docs[status] = (accepted, await stored_transcript(None, accepted, timeout=20))
            await wait_until(lambda accepted=accepted: launcher.get_session(accepted["interview_id"]) is None)
        await asyncio.sleep(0.5)
        left = {task for task in asyncio.all_tasks() if not task.done()} - before - {asyncio.current_task()}
    # At most the stand-in's side of the service's one pooled OpenAI connection; nothing of either interview.
    connections = {task for task in left if "RequestHandler.start" in repr(task.get_coro())}
    assert len(connections) <= 1 and left - connections == set(), [task.get_coro() for task in left]
    failures = [r.getMessage() for r in caplog.records if r.name == "interview_agent" and r.levelno == logging.ERROR]
    for status, (accepted, doc) in docs.items():
        assert doc["end_reason"] == "error" and str(status) in doc["error"]
        assert sum(accepted["interview_id"] in line and str(status) in line for line in failures) == 1
    assert standin.peers == []


async def test_ending_the_call_closes_the_peer_connection(standin, make_settings):
    async with running(make_settings(), make_llm=None) as (client, _):
        await client.post("/interviews", json=invite_body("rt-close"))
        await wait_until(lambda: "response.create" in standin.event_types(), timeout=20)
        edge = await CALLS.wait_joined("rt-close")
        edge.end_call()
        await asyncio.wait_for(standin.closed.wait(), timeout=10)


def test_the_interviewers_voice_holds_no_memory_per_frame():
    """Every 20 ms of the interviewer's voice passes getstream's FrameResampler on its way to Stream; PyAV before 17.1
    leaked about 200 bytes there per frame (PyAV-Org/PyAV#2282), 1.2 MB a minute per interview, never freed."""
    resampler = FrameResampler(rate=48000, layout="mono", format="s16", frame_size=960)
    voice = PcmData(sample_rate=24000, format="s16", samples=np.zeros(480, dtype=np.int16), channels=1)  # OpenAI's
    tracemalloc.start()
    try:
        for _ in range(500):
            resampler.resample(voice)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(15_000):  # five minutes of one interviewer speaking
            resampler.resample(voice)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 100_000, f"{held / 15_000:.0f} bytes held per frame"
