"""`python -m bench.openai_server PORT`: OpenAI Realtime's side for the capacity rig, in a process of its own.

Each interviewer that connects (the real `openai.Realtime` plugin over WebRTC) gets a voice that speaks half of the
time (2 s of speech, 2 s of silence) and, every 4 s, the transcription events of both speakers: the interviewer's
line (`response.output_audio_transcript.done`, `response.done`) and the candidate's
(`conversation.item.input_audio_transcription.completed`). `GET /stats` says what arrived from the interviewers.
"""

import asyncio
import fractions
import json
import sys
import time
import uuid
from typing import Any

import av
import numpy as np
from aiohttp import web
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription

from bench.speech import FRAME, RATE, speech_frame

STATS = {"peers": 0, "frames_in": 0, "voiced_frames_in": 0, "lines_sent": 0}
PEERS: set[RTCPeerConnection] = set()
TASKS: set[asyncio.Task[Any]] = set()


class Voice(MediaStreamTrack):
    """The model's voice: 20 ms frames in real time, speech for 2 s out of every 4."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.start: float | None = None
        self.pts = 0

    async def recv(self) -> av.AudioFrame:
        if self.start is None:
            self.start = time.monotonic()
        else:
            self.pts += FRAME
            await asyncio.sleep(max(0.0, self.start + self.pts / RATE - time.monotonic()))
        speaking = (self.pts // RATE) % 4 < 2
        samples = speech_frame(self.pts // FRAME) if speaking else np.zeros(FRAME, dtype=np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, self.pts, fractions.Fraction(1, RATE)
        return frame


def event(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, "event_id": f"event_{uuid.uuid4().hex[:20]}"} | fields)


async def script(channel: Any) -> None:
    """Every 4 s, one line from each speaker, as OpenAI reports them."""
    line = 0
    while True:
        await asyncio.sleep(4)
        if channel.readyState != "open":  # the interviewer left
            return
        line += 1
        response, item = f"resp_{uuid.uuid4().hex[:12]}", f"item_{uuid.uuid4().hex[:12]}"
        text = f"Interviewer line {line}: tell me more about how you tested that."
        ids = {"response_id": response, "item_id": item, "output_index": 0, "content_index": 0}
        channel.send(event("response.output_audio_transcript.done", transcript=text, **ids))
        done = {"id": response, "object": "realtime.response", "status": "completed", "output": []}
        channel.send(event("response.done", response=done))
        usage = {"type": "duration", "seconds": 2.0}
        said = f"Candidate line {line}: we replayed production traffic against the new ledger."
        channel.send(
            event(
                "conversation.item.input_audio_transcription.completed",
                item_id=f"item_{line}",
                content_index=0,
                transcript=said,
                usage=usage,
            )
        )
        STATS["lines_sent"] += 2


async def count_frames(track: MediaStreamTrack) -> None:
    while True:
        try:
            frame = await track.recv()
        except Exception:  # the interviewer left
            return
        STATS["frames_in"] += 1
        STATS["voiced_frames_in"] += bool(np.any(frame.to_ndarray()))


async def create_call(request: web.Request) -> web.Response:
    form = await request.post()  # the plugin sends the offer as multipart: sdp and session
    offer, session = bytes(form["sdp"]).decode(), json.loads(bytes(form["session"]))
    peer = RTCPeerConnection()
    PEERS.add(peer)
    STATS["peers"] += 1
    peer.addTrack(Voice())

    @peer.on("datachannel")
    def on_datachannel(channel: Any) -> None:
        channel.send(event("session.created", session=session | {"type": "realtime"}))
        background(script(channel))

    @peer.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        background(count_frames(track))

    @peer.on("connectionstatechange")
    async def on_state() -> None:
        if peer.connectionState in ("closed", "failed"):
            PEERS.discard(peer)
            await peer.close()

    await peer.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    await peer.setLocalDescription(await peer.createAnswer())
    return web.Response(status=201, text=peer.localDescription.sdp, content_type="application/sdp")


def background(coro: Any) -> None:
    task = asyncio.create_task(coro)
    TASKS.add(task)
    task.add_done_callback(TASKS.discard)


async def stats(_: web.Request) -> web.Response:
    return web.json_response(STATS | {"connected": len(PEERS)})


if __name__ == "__main__":
    app = web.Application()
    app.router.add_post("/v1/realtime/calls", create_call)
    app.router.add_get("/stats", stats)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
