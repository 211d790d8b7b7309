"""The real service, with its own `getstream.Edge` and `openai.Realtime`, against stand-ins for Stream and OpenAI.

Stream (coordinator REST and WebSocket, SFU signalling, Twirp, aiortc media) runs on its own thread and loop
(`tests.standins.stream`); OpenAI Realtime (`tests.standins.openai_realtime`) on the test's loop, which is the service's loop.
Every packet stays on 127.0.0.1 (`tests.standins.network.loopback_only`, called by conftest).
"""

import asyncio
import gc
import time
from typing import Any

import pytest

from tests.conftest import invite_body, running, stored_transcript
from tests.fakes import wait_until
from tests.standins.openai_realtime import RealtimeStandIn
from tests.standins.stream import StreamStandIn

pytestmark = pytest.mark.filterwarnings(
    "ignore:Missing value:RuntimeWarning",  # dataclasses_json, on the stand-in's sparse answers (infer_missing=True)
    "ignore::jwt.warnings.InsecureKeyLengthWarning",  # the tests' short secret
)

CANDIDATE = "candidate-7"
GREETING = "Hello Ada, welcome. Tell us about yourself."
ANSWER = "I build distributed systems."


@pytest.fixture
async def stream() -> Any:
    async with StreamStandIn() as server:  # every getstream.Edge built meanwhile talks to it
        yield server


@pytest.fixture
async def openai(monkeypatch: pytest.MonkeyPatch) -> Any:
    async with RealtimeStandIn() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)  # where the service's AsyncOpenAI client looks
        yield server


async def start(client: Any, call_id: str) -> dict[str, Any]:
    response = await client.post("/interviews", json=invite_body(call_id, candidate_user_id=CANDIDATE))
    assert response.status_code == 202, response.text
    return response.json()


def voiced_in(openai: RealtimeStandIn) -> int:
    """Non-silent frames OpenAI received from the agent: the candidate's speech, passed on."""
    return openai.voiced_frames_in


def sending_video(sdp: str) -> bool:
    """Whether an SDP offer has a video m-line that sends (sendrecv or sendonly)."""
    sections = sdp.split("m=")[1:]
    return any(s.startswith("video") and ("a=sendrecv" in s or "a=sendonly" in s) for s in sections)


def lines(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["text"]) for m in doc["messages"]]


async def greeted(openai: RealtimeStandIn, count: int = 1) -> None:
    await wait_until(lambda: openai.event_types().count("response.create") >= count, timeout=20)


@pytest.mark.parametrize("edge", ["the service's own", "getstream.Edge"])
async def test_a_whole_interview(stream, openai, make_settings, edge):
    call_id = "se-whole"
    record = stream.record(call_id)
    make_edge = stream.make_edge if edge == "getstream.Edge" else None
    async with running(make_settings(), make_llm=None, make_edge=make_edge) as (client, _):
        accepted = await start(client, call_id)
        await stream.wait_agent_joined(call_id)
        await stream.candidate_joins(call_id)
        await greeted(openai)  # the interviewer speaks first
        openai.interviewer_says(GREETING)
        await wait_until(lambda: record.agent_frames > 50, timeout=10)  # the interviewer's voice reaches Stream
        await wait_until(lambda: record.agent_loud_frames > 10, timeout=10)  # audible: the stand-in's speech
        voiced = voiced_in(openai)
        await wait_until(lambda: voiced_in(openai) > voiced + 25, timeout=15)  # the candidate's speech reaches OpenAI
        openai.candidate_said(ANSWER)
        await asyncio.sleep(0.5)
        await stream.end_call(call_id)
        doc = await stored_transcript(None, accepted, timeout=20)

    assert (CANDIDATE, "TRACK_TYPE_AUDIO") in record.subscriptions[-1]
    assert len(record.publisher_offers) == 1 and record.joins == 1
    assert lines(doc) == [("interviewer", GREETING), ("candidate", ANSWER)]
    assert doc["end_reason"] == "call_ended" and doc["error"] is None
    assert not stream.unhandled


async def test_the_candidate_already_in_the_call(stream, openai, make_settings):
    call_id = "se-early"
    record = stream.record(call_id)
    await stream.candidate_joins(call_id)  # listed in the SFU's join response, tracks and all
    async with running(make_settings(), make_llm=None, make_edge=None) as (client, _):
        accepted = await start(client, call_id)
        await stream.wait_agent_joined(call_id)
        await wait_until(lambda: any((CANDIDATE, "TRACK_TYPE_AUDIO") in r for r in record.subscriptions), timeout=10)
        await greeted(openai)
        openai.interviewer_says(GREETING)
        await wait_until(lambda: voiced_in(openai) > 25, timeout=15)
        openai.candidate_said(ANSWER)
        await asyncio.sleep(0.5)
        await stream.end_call(call_id)
        doc = await stored_transcript(None, accepted, timeout=20)

    assert lines(doc) == [("interviewer", GREETING), ("candidate", ANSWER)]
    assert doc["end_reason"] == "call_ended"


async def test_the_candidate_leaving_ends_the_interview(stream, openai, make_settings):
    call_id = "se-left"
    # The idle timeout is also how long the interviewer waits for the candidate to be heard: not too short.
    settings = make_settings(idle_timeout_seconds=3)
    async with running(settings, make_llm=None, make_edge=None) as (client, launcher):
        accepted = await start(client, call_id)
        await stream.wait_agent_joined(call_id)
        await stream.candidate_joins(call_id)
        await greeted(openai)
        openai.interviewer_says(GREETING)
        await wait_until(lambda: voiced_in(openai) > 25, timeout=15)
        openai.candidate_said(ANSWER)
        await asyncio.sleep(0.5)
        await stream.leave(call_id, CANDIDATE)  # and nobody ends the call
        doc = await stored_transcript(None, accepted, timeout=20)
        await wait_until(lambda: launcher.get_session(accepted["interview_id"]) is None, timeout=10)

    assert doc["end_reason"] == "candidate_left", doc["end_reason"]
    assert lines(doc) == [("interviewer", GREETING), ("candidate", ANSWER)]


async def test_the_camera_reaches_neither_the_agent_nor_openai(stream, openai, make_settings):
    call_id = "se-camera"
    record = stream.record(call_id)
    async with running(make_settings(), make_llm=None, make_edge=None) as (client, _):
        accepted = await start(client, call_id)
        await stream.wait_agent_joined(call_id)
        await stream.candidate_joins(call_id, camera=True)
        await greeted(openai)
        await wait_until(lambda: voiced_in(openai) > 25, timeout=15)  # the microphone works meanwhile
        await asyncio.sleep(4)  # time for a renegotiation with OpenAI, had the camera been handed over
        offers, sdps, subscribed = len(openai.offers), list(openai.offer_sdps), record.subscribed_types()
        video_sent = record.video_frames_sent
        await stream.end_call(call_id)
        await stored_transcript(None, accepted, timeout=20)

    problems = []  # all of them at once: each is a separate cause
    if offers != 1:
        problems.append(f"{offers} POST /realtime/calls (OpenAI sessions) for one interview")
    if any(sending_video(sdp) for sdp in sdps):
        problems.append(f"{sum(map(sending_video, sdps))} SDP offer(s) to OpenAI send video")
    if subscribed & {"TRACK_TYPE_VIDEO", "TRACK_TYPE_SCREEN_SHARE"}:
        problems.append(f"the edge subscribed to {sorted(subscribed)}")
    if video_sent:
        problems.append(f"{video_sent} camera frames went to the agent")
    assert not problems, "; ".join(problems)


async def test_an_interview_that_ends_stalls_no_other(stream, openai, make_settings):
    first, second = "se-first", "se-second"
    async with running(make_settings(), make_llm=None, make_edge=None) as (client, _):
        accepted = {}
        for call_id in (first, second):
            accepted[call_id] = await start(client, call_id)
            await stream.wait_agent_joined(call_id)
            await stream.candidate_joins(call_id)
        await greeted(openai, 2)
        await wait_until(lambda: stream.record(second).agent_frames > 50, timeout=10)

        lags: list[tuple[float, float]] = []  # (when, how late) of a 5 ms sleep on the service's loop

        async def watch() -> None:
            while True:
                before = time.monotonic()
                await asyncio.sleep(0.005)
                lags.append((before, time.monotonic() - before - 0.005))

        gc_pauses: list[tuple[float, float]] = []  # (when, how long): to tell a collection from a blocking call
        gc_started = [0.0]

        def on_gc(phase: str, _: dict[str, int]) -> None:
            if phase == "start":
                gc_started[0] = time.monotonic()
            else:
                gc_pauses.append((gc_started[0], time.monotonic() - gc_started[0]))

        watcher = asyncio.create_task(watch())
        gc.callbacks.append(on_gc)
        await asyncio.sleep(0.5)
        voiced = voiced_in(openai)
        ended_at = time.monotonic()
        await stream.end_call(first)
        await stored_transcript(None, accepted[first], timeout=20)
        stored_at = time.monotonic()
        await asyncio.sleep(3)
        until = time.monotonic()
        watcher.cancel()
        gc.callbacks.remove(on_gc)
        voiced_after = voiced_in(openai)
        gap = stream.record(second).largest_frame_gap(ended_at, until)
        await stream.end_call(second)
        await stored_transcript(None, accepted[second], timeout=20)

    worst, when = max((lag, when) for when, lag in lags if ended_at <= when <= until)
    collected = max((pause for at, pause in gc_pauses if ended_at <= at <= until), default=0.0)
    problems = []
    if worst >= 0.1:
        problems.append(
            f"the service's loop stalled {worst * 1000:.0f} ms, {when - ended_at:.2f} s after the first call ended "
            f"(its transcript stored at {stored_at - ended_at:.2f} s; longest GC pause {collected * 1000:.0f} ms)"
        )
    if gap >= 0.5:
        problems.append(f"the second interviewer's audio stopped reaching Stream for {gap * 1000:.0f} ms")
    if voiced_after <= voiced:
        problems.append("the second candidate's speech stopped reaching OpenAI")
    assert not problems, "; ".join(problems)


async def test_a_recruiter_and_a_muted_microphone(stream, openai, make_settings):
    call_id = "se-mute"
    record = stream.record(call_id)
    candidate, recruiter = (CANDIDATE, "TRACK_TYPE_AUDIO"), ("recruiter-1", "TRACK_TYPE_AUDIO")
    async with running(make_settings(), make_llm=None, make_edge=None) as (client, _):
        accepted = await start(client, call_id)
        await stream.wait_agent_joined(call_id)
        await stream.candidate_joins(call_id)
        await stream.recruiter_joins(call_id)
        await wait_until(lambda: record.subscriptions and {candidate, recruiter} <= set(record.subscriptions[-1]))
        await greeted(openai)
        await wait_until(lambda: voiced_in(openai) > 25, timeout=15)

        await stream.unpublish(call_id, CANDIDATE, "audio")  # the candidate mutes; the recruiter's tone goes on
        await wait_until(lambda: candidate not in record.subscriptions[-1])
        assert recruiter in record.subscriptions[-1]
        await asyncio.sleep(1)  # what was on its way
        muted = voiced_in(openai)
        await asyncio.sleep(2)
        heard_while_muted = voiced_in(openai) - muted

        await stream.publish(call_id, CANDIDATE, "audio")  # and unmutes
        await wait_until(lambda: candidate in record.subscriptions[-1])
        await wait_until(lambda: voiced_in(openai) > muted + heard_while_muted + 25, timeout=15)
        await stream.end_call(call_id)
        doc = await stored_transcript(None, accepted, timeout=20)

    assert heard_while_muted < 5, f"OpenAI heard {heard_while_muted} voiced frames while the candidate was muted"
    assert doc["end_reason"] == "call_ended"
