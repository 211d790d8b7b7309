"""OpenAI Realtime's side of the WebRTC protocol, on 127.0.0.1, for the real `openai.Realtime` plugin.

It answers `POST /v1/realtime/calls` (the SDP offer with the session config) with an SDP answer from an aiortc
peer connection, sends audio back on its track, accepts the `oai-events` data channel, sends `session.created`,
records every client event, and can be scripted to emit transcriptions and `response.done`. Every event it sends,
and every event it receives, is validated against the `openai.types.realtime` models, so it cannot drift from
the protocol the SDK describes.
"""

import asyncio
import json
import uuid
from typing import Any

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamTrack
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import TypeAdapter

from standins.network import free_port

SERVER_EVENTS: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
CLIENT_EVENTS: TypeAdapter[Any] = TypeAdapter(RealtimeClientEvent)


def event_id() -> str:
    return f"event_{uuid.uuid4().hex[:20]}"


class RealtimeStandIn:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.refuse_with: int | None = None  # 401 or 500: how the next calls are answered
        self.offers: list[dict[str, Any]] = []  # the session config sent with each SDP offer
        self.client_events: list[dict[str, Any]] = []
        self.audio_frames = 0  # frames received from the agent
        self.peers: list[RTCPeerConnection] = []
        self.channel: Any = None
        self.channel_open = asyncio.Event()
        self.closed = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> "RealtimeStandIn":
        app = web.Application()
        app.router.add_post("/v1/realtime/calls", self.create_call)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *_: object) -> None:
        for peer in self.peers:
            await peer.close()
        for task in self.tasks:
            task.cancel()
        await self.runner.cleanup()

    async def create_call(self, request: web.Request) -> web.Response:
        assert request.headers["Authorization"].startswith("Bearer ")
        assert request.headers.get("Accept") == "application/sdp"
        if self.refuse_with:
            error = {"message": "refused by the stand-in", "type": "invalid_request_error", "code": None}
            return web.json_response({"error": error}, status=self.refuse_with)
        if request.content_type.startswith("multipart/"):
            form = await request.post()  # aiohttp hands the parts over as bytearray
            offer, session = bytes(form["sdp"]).decode(), json.loads(bytes(form["session"]))
        else:
            body = await request.json()
            offer, session = body["sdp"], body.get("session", {})
        self.offers.append(session)

        peer = RTCPeerConnection()
        self.peers.append(peer)
        peer.addTrack(AudioStreamTrack())  # the model's voice: silence, at the real rate

        @peer.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            assert channel.label == "oai-events"
            self.channel = channel
            channel.on("message", self.receive)
            self.channel_open.set()
            self.send({"type": "session.created", "event_id": event_id(), "session": session | {"type": "realtime"}})

        @peer.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.background(self.count_frames(track))

        @peer.on("connectionstatechange")
        def on_state() -> None:
            if peer.connectionState in ("closed", "failed"):
                self.closed.set()

        await peer.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await peer.setLocalDescription(await peer.createAnswer())
        return web.Response(status=201, text=peer.localDescription.sdp, content_type="application/sdp")

    def receive(self, message: str) -> None:
        event = json.loads(message)
        CLIENT_EVENTS.validate_python(event)
        self.client_events.append(event)

    async def count_frames(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                await track.recv()
                self.audio_frames += 1
        except Exception:  # the track ended with the connection
            self.closed.set()

    def background(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def send(self, event: dict[str, Any]) -> None:
        SERVER_EVENTS.validate_python(event)
        self.channel.send(json.dumps(event))

    def event_types(self) -> list[str]:
        return [event["type"] for event in self.client_events]

    # The script: what OpenAI says during an interview.
    def interviewer_says(self, text: str) -> None:
        response_id, item_id = f"resp_{uuid.uuid4().hex[:12]}", f"item_{uuid.uuid4().hex[:12]}"
        transcript = {"type": "response.output_audio_transcript.done", "event_id": event_id(), "item_id": item_id}
        self.send(transcript | {"response_id": response_id, "output_index": 0, "content_index": 0, "transcript": text})
        response = {"id": response_id, "object": "realtime.response", "status": "completed", "output": []}
        self.send({"type": "response.done", "event_id": event_id(), "response": response})

    def candidate_said(self, text: str) -> None:
        event = {"type": "conversation.item.input_audio_transcription.completed", "event_id": event_id()}
        usage = {"type": "duration", "seconds": 1.5}
        self.send(
            event | {"item_id": f"item_{uuid.uuid4().hex[:12]}", "content_index": 0, "transcript": text, "usage": usage}
        )
