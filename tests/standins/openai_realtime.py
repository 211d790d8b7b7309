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

`python -m tests.standins.openai_realtime PORT [CHATTER_SECONDS]` runs it as a process of its own, with `GET /stats`.
"""

import asyncio
import fractions
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import TypeAdapter

from bench.speech import FRAME, RATE, speech_frame
from tests.standins.network import free_port, loopback_only

SERVER_EVENTS: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
CLIENT_EVENTS: TypeAdapter[Any] = TypeAdapter(RealtimeClientEvent)
VOICED = 100  # peak (of 32767) above which a frame from the agent counts as voiced
SPEAKS_FOR = 2.0  # seconds of speech after each `response.create`


def event_id() -> str:
    return f"event_{uuid.uuid4().hex[:20]}"


def short_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def sends_video(sdp: str) -> bool:
    """Whether an SDP offer has a video m-line that sends (sendrecv or sendonly)."""
    sections = sdp.split("m=")[1:]
    return any(s.startswith("video") and ("a=sendrecv" in s or "a=sendonly" in s) for s in sections)


class Voice(MediaStreamTrack):
    """The model's voice: 20 ms frames in real time; speech while `speaking_until` is ahead or, with a `period`,
    during the first half of every period; silence otherwise."""

    kind = "audio"

    def __init__(self, period: float | None = None) -> None:
        super().__init__()
        self.period = period
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

    def event_types(self) -> list[str]:
        return [event["type"] for event in self.events]


class RealtimeStandIn:
    def __init__(self, port: int | None = None, chatter: float | None = None) -> None:
        self.port = port or free_port()
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
        call = Call(peer, Voice(period=self.chatter), session, offer)
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
            self.background(self.count_frames(track))

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

    async def count_frames(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
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
        (channel or self.channel).send(json.dumps(event))

    def event_types(self) -> list[str]:
        return [event["type"] for event in self.client_events]

    def call_for(self, sdp: str) -> Call | None:
        """The call a client peer connection made, by its SDP (the offer or its local description): same ICE ufrag."""
        ufrag = next((line for line in sdp.splitlines() if line.startswith("a=ice-ufrag:")), None)
        return next((call for call in self.calls if ufrag and ufrag in call.offer.splitlines()), None)

    async def stats(self, _: web.Request) -> web.Response:
        figures = {"peers": len(self.calls), "connected": len(self.peers), "frames_in": self.audio_frames}
        figures |= {"voiced_frames_in": self.voiced_frames_in, "lines_sent": self.lines_sent}
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


async def serve(port: int, chatter: float | None = None) -> None:
    """The stand-in as a process of its own, until it is terminated."""
    loopback_only()
    async with RealtimeStandIn(port, chatter):
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else None))
