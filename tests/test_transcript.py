"""The transcript (version 5) through the whole service: the real `openai.Realtime` plugin against the WebRTC stand-in
sending OpenAI's GA event sequence (item ids, `previous_item_id`), the fake Stream edge feeding the candidate's audio.

OpenAI transcribes a candidate's turn in parallel with the reply to it, so its text may land after the reply's
deltas, after the reply's transcript or after the whole response; when the candidate interrupts, even after the next
reply. Whatever the arrival order, the lines are in spoken order, each line's `at` is when that speech began, and a
line the candidate interrupted keeps its whole generated text, marked `interrupted` with what was played (`spoken_ms`).
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from getstream.video.rtc import PcmData
from vision_agents.core.edge.events import AudioReceivedEvent

from bench.speech import FRAME, RATE, speech_frame
from tests.conftest import invite_body, running, stored_transcript
from tests.fakes import CALLS, CANDIDATE, FakeEdge
from tests.standins.openai_realtime import BargeIn, Call, RealtimeStandIn

SPEAKS = 0.8  # seconds the candidate speaks in each turn
GAP = 0.2  # seconds between the interviewer's transcript deltas: 4 deltas, so a reply's text lands 0.8 s after it began
TOLERANCE = timedelta(seconds=0.3)  # between when the stand-in sent a line's first event and the line's `at`
GREETING = "Hello Ada, welcome. Tell us a little about yourself."


@pytest.fixture
async def standin(monkeypatch):
    async with RealtimeStandIn() as server:
        server.echo_items = True  # OpenAI answers the interviewer's `conversation.item.create` (the cue to greet)
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)  # where the plugin's AsyncOpenAI client looks
        yield server


async def greeted(standin: RealtimeStandIn, call_id: str) -> tuple[FakeEdge, Call]:
    """The call's edge, and the stand-in's side of its OpenAI connection, once the candidate was heard and the
    interviewer asked OpenAI to greet them (`response.create`)."""
    edge, deadline = await CALLS.wait_joined(call_id, timeout=20), time.monotonic() + 20
    call = standin.call_for(edge.agent.llm.rtc.pc.localDescription.sdp)
    assert call is not None
    while "response.create" not in call.event_types():
        assert time.monotonic() < deadline, f"the interviewer never greeted the candidate on {call_id}"
        edge.candidate_speaks(frames=5)
        await asyncio.sleep(0.1)
    return edge, call


async def speak(edge: FakeEdge, seconds: float, after: float = 0.0) -> None:
    """The candidate's real speech, `after` s from now, 20 ms frames in real time, as Stream delivers them."""
    await asyncio.sleep(after)
    for index in range(int(seconds * RATE / FRAME)):
        pcm = PcmData(sample_rate=RATE, format="s16", samples=speech_frame(index).copy(), channels=1)
        edge.events.send(AudioReceivedEvent(pcm_data=pcm, participant=CANDIDATE))
        await asyncio.sleep(FRAME / RATE)


@dataclass
class Script:
    """One interview as OpenAI reports it, in spoken order; `spoken` is each line's (role, item id) in that order."""

    standin: RealtimeStandIn
    edge: FakeEdge
    channel: Any
    spoken: list[tuple[str, str]] = field(default_factory=list)

    async def candidate(self, text: str) -> str:
        """A candidate turn, heard on the call (real speech through the edge) and by OpenAI's VAD; its text comes
        later, by `transcription`."""
        voice = asyncio.create_task(speak(self.edge, SPEAKS + 0.2))
        await asyncio.sleep(0.1)  # VAD reports speech once some has arrived
        item = await self.standin.candidate_turn(text, speak_for=SPEAKS, channel=self.channel)
        await voice
        self.spoken.append(("candidate", item))
        return item

    async def reply(self, text: str, transcribe: str | None = None, at: str = "deltas") -> str:
        item = await self.standin.reply(text, transcribe=transcribe, at=at, gap=GAP, channel=self.channel)
        self.spoken.append(("interviewer", item))
        return item

    async def barge_in(self, text: str, said: str) -> BargeIn:
        """The interviewer's reply, interrupted by the candidate (heard on the call too) once its text is complete."""
        voice = asyncio.create_task(speak(self.edge, 2 * GAP + SPEAKS, after=4 * GAP))  # from the last delta on
        barge_in = await self.standin.barge_in(text, said, gap=GAP, speak_for=SPEAKS, channel=self.channel)
        await voice
        self.spoken += [("interviewer", barge_in.interviewer), ("candidate", barge_in.candidate)]
        return barge_in

    def transcription(self, item: str, text: str | None = None) -> None:
        self.standin.transcription(item, text, channel=self.channel)


async def transcript_of(
    standin: RealtimeStandIn, make_settings: Any, call_id: str, play: Callable[[Script], Awaitable[None]]
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The stored transcript of an interview on the real service (greeted, then `play`, then the call ends), and
    each line's (role, item id) in spoken order."""
    async with running(make_settings(), make_llm=None) as (client, _):
        response = await client.post("/interviews", json=invite_body(call_id))
        assert response.status_code == 202, response.text
        accepted = response.json()
        edge, call = await greeted(standin, call_id)
        script = Script(standin, edge, call.channel)
        await play(script)
        await asyncio.sleep(0.3)  # the last events reach the service before the call ends
        edge.end_call()
        return await stored_transcript(None, accepted, timeout=15), script.spoken


def check_times(doc: dict[str, Any], spoken: list[tuple[str, str]], standin: RealtimeStandIn) -> None:
    """Each line's `at` is when its speech began (the stand-in sent the first event naming its item), not when its
    text arrived; so `at` never goes back down the list."""
    texts = {"candidate": "conversation.item.input_audio_transcription.completed"}
    texts["interviewer"] = "response.output_audio_transcript.done"
    for message, (role, item) in zip(doc["messages"], spoken, strict=True):
        began, text_came = standin.began[item], standin.sent_at[(texts[role], item)]
        assert text_came - began > 2 * TOLERANCE, "the script must tell when speech began from when its text came"
        at = datetime.fromisoformat(message["at"])
        assert at.utcoffset() == timedelta(0), message["at"]
        assert abs(at - began) < TOLERANCE, f"{message}: began at {began.isoformat()}, text at {text_came.isoformat()}"
    times = [message["at"] for message in doc["messages"]]
    assert [datetime.fromisoformat(at) for at in times] == sorted(datetime.fromisoformat(at) for at in times), times


async def test_lines_are_in_spoken_order_and_timed_when_speech_began_wherever_the_candidates_text_lands(
    standin, make_settings
):
    """Three exchanges: each candidate turn's transcription lands after the reply's deltas, after its transcript's
    `done`, after `response.done`."""
    exchanges = [
        ("I build payment systems, mostly in Python.", "Tell us about a system you scaled.", "deltas"),
        ("A ledger that went from one to forty shards.", "How did you test the migration?", "done"),
        ("We replayed a week of production traffic.", "What would you do differently today?", "response_done"),
    ]

    async def play(script: Script) -> None:
        await script.reply(GREETING)
        for answer, question, at in exchanges:
            turn = await script.candidate(answer)
            await script.reply(question, transcribe=turn, at=at)

    doc, spoken = await transcript_of(standin, make_settings, "tr-order", play)

    said = [("interviewer", GREETING)]
    for answer, question, _ in exchanges:
        said += [("candidate", answer), ("interviewer", question)]
    assert [(m["role"], m["text"]) for m in doc["messages"]] == said
    assert [{k: v for k, v in m.items() if k != "at"} for m in doc["messages"]] == [
        {"role": role, "text": text} for role, text in said
    ]  # no `speaker_id`, nothing marked interrupted
    check_times(doc, spoken, standin)
    assert doc["version"] == 5


async def test_a_barge_in_marks_the_interrupted_line_and_keeps_the_candidates_late_words(standin, make_settings):
    """The candidate interrupts the interviewer's reply once its text is complete; their words are transcribed only
    after the next reply. A turn transcribed as nothing (noise) leaves no line."""
    question = "Tell us about a system you scaled, what broke first, and how you found out that it had broken."
    interruption = "Sorry, could you repeat the first part?"
    barge_in: list[BargeIn] = []

    async def play(script: Script) -> None:
        await script.reply(GREETING)
        turn = await script.candidate("I build payment systems.")
        script.transcription(turn)  # before the reply, this time
        barge_in.append(await script.barge_in(question, interruption))
        await script.reply("Of course: a system you scaled.")
        script.transcription(barge_in[0].candidate)  # late: after the next reply
        noise = await script.candidate("")
        script.transcription(noise, "")
        script.spoken.pop()  # no line

    doc, spoken = await transcript_of(standin, make_settings, "tr-barge", play)

    said = [
        ("interviewer", GREETING),
        ("candidate", "I build payment systems."),
        ("interviewer", question),
        ("candidate", interruption),
        ("interviewer", "Of course: a system you scaled."),
    ]
    assert [(m["role"], m["text"]) for m in doc["messages"]] == said
    marks = {"interrupted": True, "spoken_ms": barge_in[0].spoken_ms}
    expected = [{"role": role, "text": text} for role, text in said]
    expected[2] |= marks  # the whole generated text, and what of it was played
    assert [{k: v for k, v in m.items() if k != "at"} for m in doc["messages"]] == expected
    check_times(doc, spoken, standin)
    assert doc["version"] == 5
