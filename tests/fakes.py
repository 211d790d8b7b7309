"""Stand-ins for what cannot run here: Stream's edge (in-process) and OpenAI Realtime (in-process LLM).

Both are built on Vision-Agents' own base classes and talk to the agent the way the real plugins do:
the edge emits `AudioReceivedEvent`s and `CallEndedEvent`, the LLM emits transcriptions through the
Realtime base class's helpers. Each fake registers itself by call id so a test can drive the call.
"""

import asyncio
import copy
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from getstream.video.rtc import AudioStreamTrack, PcmData
from pyee.asyncio import AsyncIOEventEmitter
from vision_agents.core.agents.conversation import InMemoryConversation
from vision_agents.core.edge import EdgeTransport
from vision_agents.core.edge.events import AudioReceivedEvent, CallEndedEvent
from vision_agents.core.edge.types import Connection, Participant, User
from vision_agents.core.llm.llm import LLMResponseFinal
from vision_agents.core.llm.realtime import Realtime

from interview import SESSION

CANDIDATE = Participant(original=None, user_id="candidate-7", id="candidate-7-session")


@dataclass
class FakeCall:
    id: str
    call_type: str = "default"


class FakeConnection(Connection):
    def __init__(self) -> None:
        self.joined = asyncio.Event()
        self.left_at = 0.0
        self.opened_at = time.time()
        self.closed = False

    async def close(self) -> None:
        self.closed = True

    async def wait_for_participant(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self.joined.wait(), timeout)

    def idle_since(self) -> float:
        """As Stream's: since the last other participant left, or since the agent joined an empty call."""
        return self.left_at or (0.0 if self.joined.is_set() else self.opened_at)


@dataclass
class CallScript:
    """What a test wants from a call before the agent joins it."""

    fail_join: str | None = None
    candidate_present: bool = True
    someone_else_present: bool = False  # a recruiter, say: the call is not idle, yet the candidate is not there


@dataclass
class Calls:
    """Every fake call by id: a test drives it through here."""

    edges: dict[str, "FakeEdge"] = field(default_factory=dict)
    scripts: dict[str, CallScript] = field(default_factory=dict)
    joined: dict[str, asyncio.Event] = field(default_factory=dict)

    def clear(self) -> None:
        self.edges.clear()
        self.scripts.clear()
        self.joined.clear()

    async def wait_joined(self, call_id: str, timeout: float = 10) -> "FakeEdge":
        """The call's edge once the agent joined and (with the fake LLM) spoke first: its output is consumed then."""
        await asyncio.wait_for(self.joined.setdefault(call_id, asyncio.Event()).wait(), timeout)
        edge = self.edges[call_id]
        await wait_until(lambda: getattr(edge.llm, "prompts", True), timeout)
        return edge


CALLS = Calls()


class FakeEdge(EdgeTransport[FakeCall]):
    broken: str | None = None  # set by a test: building an edge fails, as Edge() does without credentials

    def __init__(self) -> None:
        if FakeEdge.broken:
            raise ValueError(FakeEdge.broken)
        super().__init__()
        self.connection = FakeConnection()
        self.call: FakeCall | None = None
        self.agent: Any = None

    async def authenticate(self, user: User) -> None:
        self.user = user

    async def create_call(self, call_id: str, **kwargs: Any) -> FakeCall:
        return FakeCall(id=call_id, call_type=kwargs.get("call_type", "default"))

    def create_audio_track(self, *args: Any, **kwargs: Any) -> AudioStreamTrack:
        return AudioStreamTrack(sample_rate=48000, channels=1)

    def open_demo(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError

    async def join(self, agent: Any, call: FakeCall, **kwargs: Any) -> Connection:
        script = CALLS.scripts.get(call.id, CallScript())
        if script.fail_join:
            raise ConnectionError(script.fail_join)
        self.call, self.agent = call, agent
        CALLS.edges[call.id] = self
        if script.candidate_present or script.someone_else_present:
            self.connection.joined.set()
        if script.candidate_present:
            self.microphone = asyncio.create_task(self.candidate_microphone())
        CALLS.joined.setdefault(call.id, asyncio.Event()).set()
        return self.connection

    async def candidate_microphone(self) -> None:
        """A candidate on the call sends audio, silence included, until the agent has heard them (as Stream does)."""
        while not (self.agent.llm.heard.is_set() or self.connection.left_at or self.connection.closed):
            self.candidate_speaks(frames=1)
            await asyncio.sleep(0.02)

    async def publish_tracks(self, audio_track: Any, video_track: Any) -> None:
        pass

    async def create_conversation(self, call: Any, user: User, instructions: str) -> InMemoryConversation:
        return InMemoryConversation(instructions, [])

    def add_track_subscriber(self, track_id: str) -> None:
        return None

    async def send_custom_event(self, data: dict[str, Any]) -> None:
        pass

    # What a test does to the call.
    @property
    def llm(self) -> "FakeRealtime":
        return self.agent.llm

    def candidate_speaks(self, frames: int = 5) -> None:
        """Audio frames from the candidate, as Stream delivers them: the agent learns who is speaking."""
        for _ in range(frames):
            pcm = PcmData(sample_rate=48000, format="s16", samples=np.zeros(960, dtype=np.int16), channels=1)
            self.events.send(AudioReceivedEvent(pcm_data=pcm, participant=CANDIDATE))

    async def candidate_says(self, text: str) -> None:
        self.candidate_speaks()
        await wait_until(lambda: self.llm.audio_frames > 0)
        self.llm.transcribe_candidate(text)

    def candidate_leaves(self) -> None:
        self.connection.left_at = time.time()

    def end_call(self) -> None:
        assert self.call is not None
        self.events.send(CallEndedEvent(call=self.call))

    def messages(self) -> list[str]:
        conversation = self.agent.conversation
        return [m.content for m in conversation.messages] if conversation else []


class FakeRealtime(Realtime):
    """OpenAI Realtime's role, in-process, with the service's `Interviewer` interface: it hears the `candidate` alone
    (also as the agent's multi-speaker filter), sets `heard`, has the plugin's `rtc.pc` (connection state) and
    `rtc._send_event`; records prompts, audio and events sent, emits transcriptions on request, and keeps `lines`, the
    transcript the service stores, as the Interviewer does (one per OpenAI item, in the order spoken); its session
    config is `interviewer_session.json`, as the plugin's."""

    def __init__(self, fail_connect: str | None = None) -> None:
        super().__init__()
        self.fail_connect = fail_connect
        self.prompts: list[str] = []
        self.audio_frames = 0
        self.closed = False
        self.candidate, self.heard, self.lines = "", asyncio.Event(), {}
        self.realtime_session = copy.deepcopy(SESSION)  # the plugin's copy, which the service writes the language into
        self.journal: Any = lambda: None  # the service's, once it conducts the interview: called at each line, as it is
        self.rtc = FakeRtc()

    async def connect(self) -> None:
        if self.fail_connect:
            raise ConnectionError(self.fail_connect)
        self._on_connected(session_config={"instructions": self._instructions})

    async def simple_response(self, text: str, participant: Participant | None = None):  # type: ignore[override]
        self.prompts.append(text)
        yield LLMResponseFinal()

    async def process_audio(self, pcm: PcmData, participant: Participant) -> None:
        if participant.user_id == self.candidate:
            self.heard.set()
            self._current_participant = participant
            self.audio_frames += 1

    async def simple_audio_response(self, pcm: PcmData, participant: Participant) -> None:
        raise AssertionError("audio reaches the fake through process_audio")

    def clear(self, participant: Participant | None = None) -> None:
        pass

    async def watch_video_track(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def close(self) -> None:
        self.closed = True
        self._on_disconnected()

    @property
    def instructions(self) -> str:
        return self._instructions

    def say(self, text: str) -> None:
        self.line("interviewer", text)
        self._emit_agent_speech_transcription(text, mode="final")

    def transcribe_candidate(self, text: str) -> None:
        self.line("candidate", text)
        self._emit_user_speech_transcription(text, mode="final")

    def line(self, role: str, text: str) -> None:
        self.lines[f"item_{uuid.uuid4().hex[:12]}"] = {"role": role, "text": text, "at": datetime.now(UTC).isoformat()}
        self.journal()


class FakeRtc:
    """The plugin's RTCManager as the service uses it: a peer connection's state and events, and events sent."""

    def __init__(self) -> None:
        self.pc = AsyncIOEventEmitter()
        self.pc.connectionState = "connected"  # type: ignore[attr-defined]
        self._audio_to_openai_track = AudioStreamTrack(sample_rate=48000)  # the plugin's paced track to OpenAI
        self.sent: list[dict[str, Any]] = []

    async def _send_event(self, event: dict[str, Any]) -> None:
        self.sent.append(event)


async def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.02)
