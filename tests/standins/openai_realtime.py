"""OpenAI Realtime's side of the WebRTC protocol, on 127.0.0.1, for the real `openai.Realtime` plugin.

It answers `POST /v1/realtime/calls` (the SDP offer with the session config) with an SDP answer from an aiortc
peer connection, accepts the `oai-events` data channel, sends `session.created`, records every client event and
every frame of the agent's audio, and can be scripted to emit transcriptions and `response.done`. Every event it
sends, and every event it receives, is validated against the `openai.types.realtime` models, so it cannot drift from
the protocol the SDK describes.

The model's voice: silence, and ~2 s of real speech (bench/speech.wav) after each `response.create`; with
`chatter=SECONDS` (the capacity bench) it speaks for half of every period instead and sends one line from each
speaker every period.

Misbehaviours on cue, as the real service misbehaves: `refuse_with` (401/500 for the next calls), `hang` (the call
is accepted and never answered, until the client gives up or the stand-in stops), `drop_connection()` (OpenAI
closes the WebRTC connection mid-interview), `fail_response(text)` (a failed `response.done` carrying the partial
transcript), `error_event(code, message)` (an `error` server event). A transcription after the Stream call ended is
just `candidate_said(text)` called then.

OpenAI's GA event sequence, opt-in, with item ids and `previous_item_id` (../shared/notes/openai-realtime-order.md),
each event checked against its own `openai.types.realtime` model with no key the model does not name:
`candidate_turn(text)` (speech started, stopped, committed, the user item added: its text comes later, from
`transcription(item_id)`), `reply(text, transcribe=..., at=...)` (one response; the candidate's transcription lands
after its deltas, its transcript's `done` or `response.done`), `barge_in(text, said)` (a response the candidate
interrupts: cleared, truncated, cancelled). With `echo_items`, the client's `conversation.item.create` is answered with
`conversation.item.added` and `done`, as OpenAI does. `sent_at` and `began` say when each event was sent, and the
first event naming each item (UTC), for every event sent.

`python -m tests.standins.openai_realtime PORT [CHATTER_SECONDS] [--markers]` runs it as a process of its own, with
`GET /stats`. With `markers=True` the voice carries a latency marker once a second and the agent's audio is searched
for the Stream stand-in's (bench/marker.py): `GET /stats` says, per call, when each arrived. With `pilot=True`
(`--pilot`) the voice is a continuous pilot tone and the agent's audio is judged window by window against the
candidate's (bench/continuity.py): `GET /stats?from=T0&to=T1` says, per call, its continuity between two moments.
"""

import asyncio
import fractions
import itertools
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, get_args

import av
import numpy as np
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import BaseModel, TypeAdapter

from bench.continuity import PILOTS, Continuity, Pilot
from bench.marker import MarkerDetector, MarkerSource, hook_receiver
from bench.marker import figures as marker_figures
from bench.speech import FRAME, RATE, speech_frame
from tests.standins.network import free_port, loopback_only

SERVER_EVENTS: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
CLIENT_EVENTS: TypeAdapter[Any] = TypeAdapter(RealtimeClientEvent)
# Each server event's own model, by its `type` (the union's discriminator is the SDK's, not pydantic's).
SERVER_EVENT_MODELS: dict[str, type[BaseModel]] = {
    get_args(model.model_fields["type"].annotation)[0]: model for model in get_args(get_args(RealtimeServerEvent)[0])
}
VOICED = 100  # peak (of 32767) above which a frame from the agent counts as voiced
SPEAKS_FOR = 2.0  # seconds of speech after each `response.create`


def event_id() -> str:
    return f"event_{uuid.uuid4().hex[:20]}"


def short_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def no_unknown_keys(value: Any, where: str) -> None:
    """Every key of a validated event is one its model names: the SDK's models allow extra keys, so a misspelt or
    invented field would pass validation."""
    if isinstance(value, BaseModel):
        assert not value.model_extra, f"{where}: {sorted(value.model_extra)} are not in {type(value).__name__}"
        for name in type(value).model_fields:
            no_unknown_keys(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, list):
        for index, each in enumerate(value):
            no_unknown_keys(each, f"{where}[{index}]")


def pieces(text: str, count: int = 4) -> list[str]:
    """`text` in `count` transcript deltas (fewer if it has fewer words), which add up to it."""
    words = text.split(" ")
    count = min(count, len(words))
    bounds = [round(index * len(words) / count) for index in range(count + 1)]
    chunks = [" ".join(words[start:end]) for start, end in itertools.pairwise(bounds)]
    return [chunk + " " for chunk in chunks[:-1]] + chunks[-1:]


def sends_video(sdp: str) -> bool:
    """Whether an SDP offer has a video m-line that sends (sendrecv or sendonly)."""
    sections = sdp.split("m=")[1:]
    return any(s.startswith("video") and ("a=sendrecv" in s or "a=sendonly" in s) for s in sections)


class Voice(MediaStreamTrack):
    """The model's voice: 20 ms frames in real time; speech while `speaking_until` is ahead or, with a `period`,
    during the first half of every period; silence otherwise."""

    kind = "audio"

    def __init__(self, period: float | None = None, marker: MarkerSource | None = None, pilot: bool = False) -> None:
        super().__init__()
        self.period = period
        self.marker = marker  # opt-in: a latency marker once a second
        self.pilot = Pilot(PILOTS["interviewer"]) if pilot else None  # opt-in: a pilot tone, all the time
        self.speaking_until = 0.0  # time.monotonic()
        self.start: float | None = None
        self.pts = 0

    def speak(self, seconds: float = SPEAKS_FOR) -> None:
        self.speaking_until = time.monotonic() + seconds

    async def recv(self) -> av.AudioFrame:
        if self.start is None:
            self.start = time.monotonic()
        else:
            self.pts += FRAME
            await asyncio.sleep(max(0.0, self.start + self.pts / RATE - time.monotonic()))
        if self.period:
            speaking = (self.pts / RATE) % self.period < self.period / 2
        else:
            speaking = time.monotonic() < self.speaking_until
        samples = speech_frame(self.pts // FRAME) if speaking else np.zeros(FRAME, dtype=np.int16)
        if self.pilot:
            samples = self.pilot.next()
        if self.marker:
            samples = self.marker.stamp(samples, time.time())
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, self.pts, fractions.Fraction(1, RATE)
        return frame


@dataclass
class Call:
    """One interviewer's connection: its peer, its voice and (once open) its data channel."""

    peer: RTCPeerConnection
    voice: Voice
    session: dict[str, Any]
    offer: str
    channel: Any = None
    events: list[dict[str, Any]] = field(default_factory=list)
    # The GA sequence's conversation as OpenAI keeps it: item ids in order, and what each candidate turn said.
    items: list[str] = field(default_factory=list)
    said: dict[str, str] = field(default_factory=dict)
    began: float = field(default_factory=time.monotonic)  # `audio_start_ms` and `audio_end_ms` count from it
    created: float = field(default_factory=time.time)
    detector: MarkerDetector | None = None  # with markers: in the agent's audio
    continuity: Continuity | None = None  # with the pilot: the agent's audio, window by window

    def event_types(self) -> list[str]:
        return [event["type"] for event in self.events]

    def audio_ms(self) -> int:
        """Milliseconds of the session's audio so far, as OpenAI counts them in `input_audio_buffer` events."""
        return round((time.monotonic() - self.began) * 1000)

    def add_item(self, item_id: str) -> str | None:
        """Appends an item to the conversation; returns its `previous_item_id`."""
        previous = self.items[-1] if self.items else None
        self.items.append(item_id)
        return previous


class BargeIn(NamedTuple):
    """What `barge_in` did: the interrupted assistant item, the candidate's new item, what was played of the first."""

    interviewer: str
    candidate: str
    spoken_ms: int


class RealtimeStandIn:
    def __init__(
        self, port: int | None = None, chatter: float | None = None, markers: bool = False, pilot: bool = False
    ) -> None:
        self.port = port or free_port()
        self.markers = markers  # latency markers in the voice, searched for in the agent's audio
        self.pilot = pilot  # a pilot tone for a voice, and the agent's audio judged against the candidate's
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.chatter = chatter  # seconds: speak half of each period, one line from each speaker every period
        self.refuse_with: int | None = None  # 401 or 500: how the next calls are answered
        self.hang = False  # accept the next calls and never answer them
        self.hanging = 0  # calls accepted and left unanswered so far
        self.offers: list[dict[str, Any]] = []  # the session config sent with each SDP offer
        self.offer_sdps: list[str] = []  # each SDP offer, as sent
        self.client_events: list[dict[str, Any]] = []
        self.audio_frames = 0  # frames received from the agent
        self.voiced_frames_in = 0  # of which not silent (peak above VOICED)
        self.lines_sent = 0
        self.peers: list[RTCPeerConnection] = []
        self.calls: list[Call] = []
        self.channel_open = asyncio.Event()
        self.closed = asyncio.Event()  # a peer connection closed or failed
        self.stopping = asyncio.Event()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.echo_items = False  # opt-in: answer the client's `conversation.item.create` as OpenAI does
        self.sent_at: dict[tuple[str, str | None], datetime] = {}  # (type, item or response id): first sent, UTC
        self.began: dict[str, datetime] = {}  # item id: when the first event naming it was sent, UTC

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/realtime/calls", self.create_call)
        app.router.add_get("/stats", self.stats)
        return app

    async def __aenter__(self) -> "RealtimeStandIn":
        self.runner = web.AppRunner(self.app(), shutdown_timeout=2)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *_: object) -> None:
        self.stopping.set()  # lets hanging calls go
        for peer in self.peers:
            await peer.close()
        for task in list(self.tasks):
            task.cancel()
        await self.runner.cleanup()

    @property
    def channel(self) -> Any:
        """The data channel of the latest call that opened one."""
        return next((call.channel for call in reversed(self.calls) if call.channel is not None), None)

    async def create_call(self, request: web.Request) -> web.StreamResponse:
        assert request.headers["Authorization"].startswith("Bearer ")
        assert request.headers.get("Accept") == "application/sdp"
        if self.refuse_with:
            error = {"message": "refused by the stand-in", "type": "invalid_request_error", "code": None}
            return web.json_response({"error": error}, status=self.refuse_with)
        if request.content_type.startswith("multipart/"):
            form = await request.post()  # aiohttp hands the parts over as bytearray
            offer, session = bytes(form["sdp"]).decode(), json.loads(bytes(form["session"]))  # type: ignore[arg-type]
        else:
            body = await request.json()
            offer, session = body["sdp"], body.get("session", {})
        self.offers.append(session)
        self.offer_sdps.append(offer)
        if self.hang:  # OpenAI taking the call and never answering: held until the stand-in stops
            self.hanging += 1
            await self.stopping.wait()
            return web.Response(status=503)

        peer = RTCPeerConnection()
        self.peers.append(peer)
        voice = Voice(period=self.chatter, marker=MarkerSource() if self.markers else None, pilot=self.pilot)
        call = Call(peer, voice, session, offer)
        self.calls.append(call)
        peer.addTrack(call.voice)

        @peer.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            assert channel.label == "oai-events"
            call.channel = channel
            channel.on("message", lambda message: self.receive(call, message))
            self.channel_open.set()
            self.send({"type": "session.created", "event_id": event_id(), "session": session | {"type": "realtime"}})
            if self.chatter:
                self.background(self.chat(call))

        @peer.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if self.markers:
                call.detector = MarkerDetector()
                for receiver in peer.getReceivers():
                    if receiver.track is track:
                        hook_receiver(receiver, call.detector, time.time)
            if self.pilot:
                call.continuity = Continuity(PILOTS["candidate"])
            self.background(self.count_frames(track, call.detector, call.continuity))

        @peer.on("connectionstatechange")
        async def on_state() -> None:
            if peer.connectionState in ("closed", "failed"):
                self.closed.set()
                if peer in self.peers:
                    self.peers.remove(peer)
                    await peer.close()

        await peer.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await peer.setLocalDescription(await peer.createAnswer())
        return web.Response(status=201, text=peer.localDescription.sdp, content_type="application/sdp")

    def receive(self, call: Call, message: str) -> None:
        event = json.loads(message)
        CLIENT_EVENTS.validate_python(event)
        self.client_events.append(event)
        call.events.append(event)
        if event["type"] == "response.create":
            call.voice.speak()
        if self.echo_items and event["type"] == "conversation.item.create":
            self.echo_item(call, event)

    async def count_frames(
        self, track: MediaStreamTrack, detector: MarkerDetector | None = None, continuity: Continuity | None = None
    ) -> None:
        try:
            while True:
                frame = await track.recv()
                if detector:
                    detector.feed(frame, time.time())
                if continuity is not None and frame.pts is not None:  # aiortc: 48 kHz, pts from the first packet
                    samples = frame.to_ndarray()
                    mono = samples[0] if frame.format.is_planar else samples[0, :: len(frame.layout.channels)]
                    continuity.feed(mono, frame.pts // FRAME, time.time())
                self.audio_frames += 1
                if int(np.abs(frame.to_ndarray().astype(np.int32)).max(initial=0)) > VOICED:
                    self.voiced_frames_in += 1
        except Exception:  # the track ended with the connection
            self.closed.set()

    def background(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def send(self, event: dict[str, Any], channel: Any = None) -> None:
        SERVER_EVENTS.validate_python(event)
        self.record(event)
        (channel or self.channel).send(json.dumps(event))

    def record(self, event: dict[str, Any]) -> None:
        """When an event is sent: by its type and the item (else the response) it names, and each item's first."""
        now, item = datetime.now(UTC), event.get("item_id") or (event.get("item") or {}).get("id")
        named = item or event.get("response_id") or (event.get("response") or {}).get("id")
        self.sent_at.setdefault((event["type"], named), now)
        if item:
            self.began.setdefault(item, now)

    def event_types(self) -> list[str]:
        return [event["type"] for event in self.client_events]

    def call_for(self, sdp: str) -> Call | None:
        """The call a client peer connection made, by its SDP (the offer or its local description): same ICE ufrag."""
        ufrag = next((line for line in sdp.splitlines() if line.startswith("a=ice-ufrag:")), None)
        return next((call for call in self.calls if ufrag and ufrag in call.offer.splitlines()), None)

    async def stats(self, request: web.Request) -> web.Response:
        figures = {"peers": len(self.calls), "connected": len(self.peers), "frames_in": self.audio_frames}
        figures |= {"voiced_frames_in": self.voiced_frames_in, "lines_sent": self.lines_sent}
        start, end = float(request.query.get("from", 0)), float(request.query.get("to", "inf"))
        if self.markers or self.pilot:
            calls = [
                {"created": call.created}
                | marker_figures(call.detector, call.voice.marker)
                | ({"continuity": call.continuity.figures(start, end)} if call.continuity else {})
                for call in self.calls
            ]
            figures["calls"] = calls
        return web.json_response(figures)

    # The script: what OpenAI says during an interview (to the latest call unless told which channel).
    def interviewer_says(self, text: str, channel: Any = None) -> None:
        response_id, item_id = short_id("resp"), short_id("item")
        transcript = {"type": "response.output_audio_transcript.done", "event_id": event_id(), "item_id": item_id}
        ids = {"response_id": response_id, "output_index": 0, "content_index": 0}
        self.send(transcript | ids | {"transcript": text}, channel)
        response = {"id": response_id, "object": "realtime.response", "status": "completed", "output": []}
        self.send({"type": "response.done", "event_id": event_id(), "response": response}, channel)

    def candidate_said(self, text: str, channel: Any = None) -> None:
        event = {"type": "conversation.item.input_audio_transcription.completed", "event_id": event_id()}
        usage = {"type": "duration", "seconds": 1.5}
        event |= {"item_id": short_id("item"), "content_index": 0, "transcript": text, "usage": usage}
        self.send(event, channel)

    async def chat(self, call: Call) -> None:
        """The bench's script: every period, one line from each speaker, as OpenAI reports them."""
        assert self.chatter
        line = 0
        while True:
            await asyncio.sleep(self.chatter)
            if call.channel.readyState != "open":  # the interviewer left
                return
            line += 1
            asked = f"Interviewer line {line}: tell me more about how you tested that."
            said = f"Candidate line {line}: we replayed production traffic against the new ledger."
            self.interviewer_says(asked, call.channel)
            self.candidate_said(said, call.channel)
            self.lines_sent += 2

    # OpenAI's GA event sequence (opt-in), to the latest call unless told which channel: item ids, `previous_item_id`,
    # and the candidate's text arriving apart from their turn (../shared/notes/openai-realtime-order.md).
    def conversation(self, channel: Any = None) -> Call:
        """The call whose data channel is `channel` (by default the latest call's)."""
        channel = channel or self.channel
        return next(call for call in self.calls if call.channel is channel)

    def emit(self, call: Call, kind: str, **fields: Any) -> None:
        """One server event to that call, checked against its own model, every key of it one the model names."""
        event = {"type": kind, "event_id": event_id(), **fields}
        no_unknown_keys(SERVER_EVENT_MODELS[kind].model_validate(event), kind)
        self.send(event, call.channel)

    def echo_item(self, call: Call, created: dict[str, Any]) -> None:
        """OpenAI's answer to the client's `conversation.item.create`: the item, added and done."""
        item = created["item"] | {"object": "realtime.item", "status": "completed"}
        item["id"] = item.get("id") or short_id("item")
        previous = call.add_item(item["id"])
        for kind in ("conversation.item.added", "conversation.item.done"):
            self.emit(call, kind, item=item, previous_item_id=previous)

    async def candidate_turn(self, text: str, speak_for: float = 0.6, channel: Any = None) -> str:
        """The candidate speaks for `speak_for` s, as server VAD reports it: `speech_started` (a new user item),
        `speech_stopped`, `committed`, the user item added and done with no transcript yet. The text is not sent:
        `transcription(item_id)` sends it (`text`), whenever the test wants. Returns the user item's id."""
        call, item_id = self.conversation(channel), short_id("item")
        call.said[item_id] = text
        self.emit(call, "input_audio_buffer.speech_started", item_id=item_id, audio_start_ms=call.audio_ms())
        await asyncio.sleep(speak_for)
        self.commit_turn(call, item_id)
        return item_id

    def commit_turn(self, call: Call, item_id: str) -> None:
        """The end of a candidate turn: `speech_stopped`, `committed`, the user item added and done."""
        self.emit(call, "input_audio_buffer.speech_stopped", item_id=item_id, audio_end_ms=call.audio_ms())
        previous = call.add_item(item_id)
        self.emit(call, "input_audio_buffer.committed", item_id=item_id, previous_item_id=previous)
        item = {"id": item_id, "type": "message", "role": "user", "object": "realtime.item", "status": "completed"}
        item["content"] = [{"type": "input_audio", "transcript": None}]
        for kind in ("conversation.item.added", "conversation.item.done"):
            self.emit(call, kind, item=item, previous_item_id=previous)

    def transcription(self, item_id: str, text: str | None = None, delta: bool = True, channel: Any = None) -> None:
        """OpenAI's transcription of a candidate turn (one `delta`, then `completed`): `text`, by default what
        `candidate_turn` or `barge_in` was told the turn said."""
        call = self.conversation(channel)
        text = call.said.get(item_id, "") if text is None else text
        ids = {"item_id": item_id, "content_index": 0}
        if delta and text:
            self.emit(call, "conversation.item.input_audio_transcription.delta", **ids, delta=text)
        usage = {"type": "duration", "seconds": 1.5}
        self.emit(call, "conversation.item.input_audio_transcription.completed", **ids, transcript=text, usage=usage)

    async def reply(
        self,
        text: str,
        transcribe: str | tuple[str, str] | None = None,
        at: str = "deltas",
        gap: float = 0.15,
        channel: Any = None,
    ) -> str:
        """One interviewer response as OpenAI sends it: created, the assistant item added (after the conversation's
        last item), the voice playing, transcript deltas `gap` s apart, the transcript `done`, the item and the
        response done (completed), the voice stopped. `transcribe`, a candidate item (or `(item, text)`), has its
        transcription sent after the deltas (`at="deltas"`), the transcript's `done` (`"done"`) or `response.done`
        (`"response_done"`). Returns the assistant item's id."""
        assert at in ("deltas", "done", "response_done"), at
        call = self.conversation(channel)
        response_id, item_id, previous, _ = await self.start_response(call, text, gap)
        if at == "deltas":
            self.transcribe(call, transcribe)
        ids = {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}
        self.emit(call, "response.output_audio_transcript.done", **ids, transcript=text)
        if at == "done":
            self.transcribe(call, transcribe)
        self.finish_response(call, response_id, item_id, previous, text, "completed")
        if at == "response_done":
            self.transcribe(call, transcribe)
        self.emit(call, "output_audio_buffer.stopped", response_id=response_id)
        call.voice.speaking_until = 0.0
        return item_id

    async def barge_in(
        self,
        text: str,
        said: str,
        gap: float = 0.15,
        speak_for: float = 0.6,
        spoken_ms: int | None = None,
        channel: Any = None,
    ) -> BargeIn:
        """An interviewer response the candidate interrupts: created, item added, the voice playing, deltas and the
        transcript `done` (the whole generated `text`); then, `gap` s later, the candidate's `speech_started` (a new
        user item, which said `said`), `output_audio_buffer.cleared`, `conversation.item.truncated` (the assistant
        item, `audio_end_ms`: `spoken_ms`, by default the ms played since the voice started), the item done and
        `response.done` cancelled; the candidate speaks `speak_for` s, and their turn is committed. Their
        transcription is left to the test (`transcription(candidate)`), as late as it likes."""
        call = self.conversation(channel)
        response_id, item_id, previous, playing = await self.start_response(call, text, gap)
        ids = {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}
        self.emit(call, "response.output_audio_transcript.done", **ids, transcript=text)
        await asyncio.sleep(gap)
        candidate = short_id("item")
        call.said[candidate] = said
        self.emit(call, "input_audio_buffer.speech_started", item_id=candidate, audio_start_ms=call.audio_ms())
        self.emit(call, "output_audio_buffer.cleared", response_id=response_id)
        call.voice.speaking_until = 0.0
        played = round((time.monotonic() - playing) * 1000) if spoken_ms is None else spoken_ms
        self.emit(call, "conversation.item.truncated", item_id=item_id, content_index=0, audio_end_ms=played)
        self.finish_response(call, response_id, item_id, previous, text, "cancelled")
        await asyncio.sleep(speak_for)
        self.commit_turn(call, candidate)
        return BargeIn(item_id, candidate, played)

    async def start_response(self, call: Call, text: str, gap: float) -> tuple[str, str, str | None, float]:
        """A response up to its transcript's deltas: (response id, item id, previous item id, when the voice began)."""
        response_id, item_id = short_id("resp"), short_id("item")
        response = {"id": response_id, "object": "realtime.response", "status": "in_progress", "output": []}
        self.emit(call, "response.created", response=response)
        item = {"id": item_id, "type": "message", "role": "assistant", "object": "realtime.item"}
        item |= {"status": "in_progress", "content": []}
        previous = call.add_item(item_id)
        self.emit(call, "conversation.item.added", item=item, previous_item_id=previous)
        self.emit(call, "response.output_item.added", response_id=response_id, output_index=0, item=item)
        ids = {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}
        self.emit(call, "response.content_part.added", **ids, part={"type": "audio", "transcript": ""})
        self.emit(call, "output_audio_buffer.started", response_id=response_id)
        playing = time.monotonic()
        call.voice.speak(3600)  # until stopped or cleared
        for delta in pieces(text):
            await asyncio.sleep(gap)
            self.emit(call, "response.output_audio_transcript.delta", **ids, delta=delta)
        return response_id, item_id, previous, playing

    def finish_response(
        self, call: Call, response_id: str, item_id: str, previous: str | None, text: str, status: str
    ) -> None:
        """The content part, the output item, the conversation item and the response done: `completed`, or
        `cancelled` by the candidate's turn (the item `incomplete`, its transcript the whole generated text)."""
        ids = {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}
        self.emit(call, "response.content_part.done", **ids, part={"type": "audio", "transcript": text})
        item = {"id": item_id, "type": "message", "role": "assistant", "object": "realtime.item"}
        item |= {"status": "completed" if status == "completed" else "incomplete"}
        item["content"] = [{"type": "output_audio", "transcript": text}]
        self.emit(call, "response.output_item.done", response_id=response_id, output_index=0, item=item)
        self.emit(call, "conversation.item.done", item=item, previous_item_id=previous)
        response = {"id": response_id, "object": "realtime.response", "status": status, "output": [item]}
        if status == "cancelled":
            response["status_details"] = {"type": "cancelled", "reason": "turn_detected"}
        self.emit(call, "response.done", response=response)

    def transcribe(self, call: Call, turn: str | tuple[str, str] | None) -> None:
        if isinstance(turn, str):
            self.transcription(turn, channel=call.channel)
        elif turn:
            self.transcription(*turn, channel=call.channel)

    # Misbehaviours, on cue.
    async def drop_connection(self, call: Call | None = None) -> None:
        """OpenAI ending the WebRTC connection mid-interview: that call's peer connection, or every one, closes."""
        peers = [call.peer] if call else list(self.peers)
        for peer in peers:
            if peer in self.peers:
                self.peers.remove(peer)
            await peer.close()

    def fail_response(self, text: str, channel: Any = None) -> None:
        """A response that failed mid-answer (server error, quota): `response.done` with status `failed`, its output
        the partial transcript of what the model had said."""
        content = [{"type": "output_audio", "transcript": text}]
        item = {"id": short_id("item"), "type": "message", "role": "assistant", "object": "realtime.item"}
        item |= {"status": "incomplete", "content": content}
        details = {"type": "failed", "error": {"type": "server_error", "code": "server_error"}}
        response = {"id": short_id("resp"), "object": "realtime.response", "status": "failed", "output": [item]}
        response |= {"status_details": details}
        self.send({"type": "response.done", "event_id": event_id(), "response": response}, channel)

    def error_event(self, code: str, message: str, channel: Any = None) -> None:
        error = {"type": "invalid_request_error", "code": code, "message": message, "param": None, "event_id": None}
        self.send({"type": "error", "event_id": event_id(), "error": error}, channel)


async def serve(port: int, chatter: float | None = None, markers: bool = False, pilot: bool = False) -> None:
    """The stand-in as a process of its own, until it is terminated."""
    loopback_only()
    async with RealtimeStandIn(port, chatter, markers, pilot):
        await asyncio.Event().wait()


if __name__ == "__main__":
    arguments = [argument for argument in sys.argv[1:] if argument not in ("--markers", "--pilot")]
    chatter = float(arguments[1]) if len(arguments) > 1 else None
    asyncio.run(serve(int(arguments[0]), chatter, markers="--markers" in sys.argv, pilot="--pilot" in sys.argv))
