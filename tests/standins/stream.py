"""Stream Video's side of a call, on 127.0.0.1, for the real `getstream.Edge` (vision-agents) and getstream SDK 4.3.

What it stands in for (see ../shared/notes/stream-protocol.md, which lists what the SDK sends and reads):

- the coordinator REST API (users, call get-or-create, `/join` handing out SFU credentials, the chat channel and
  messages the edge mirrors transcripts into) and the coordinator WebSocket (`connection.ok`, health checks);
- the SFU: the signalling WebSocket (protobuf `SfuRequest`/`SfuEvent`, built with the SDK's own `getstream.video.rtc.pb`
  modules), the Twirp RPCs (`SetPublisher`, `SendAnswer`, `UpdateSubscriptions`, `SendStats`, ...) and the media, with
  aiortc peer connections: it answers the agent's publisher offer and offers the agent a subscriber connection
  carrying the scripted participants' tracks;
- the people on the call: a candidate (microphone with real speech from bench/speech.wav, optionally a 720p VP8
  camera) and a recruiter (a tone), who join, publish, mute, leave, and a call that ends.

It runs its servers on its own event loop in a background thread, so that a stalled service loop does not stall
Stream, and Stream's media work does not run on the service's loop. Control methods are coroutines for the test's
loop; they hop to the stand-in's loop. What the agent did is recorded per call (`CallRecord`).

`python -m tests.standins.stream PORT [--camera | --no-camera] [--markers]` runs it as a process of its own (the
capacity bench): every call an agent joins gets a scripted candidate, `candidate-7`, who joins once the agent has
published, with a microphone (and a 720p camera, pre-encoded VP8: an SFU forwards packets, it encodes nothing), and
`GET /stats` says per call what the agent did. A process with a `getstream.Edge` reaches it with `point_getstream_at(url)`. With `--markers`
(`markers = True`) the candidate's microphone carries a latency marker once a second and the agent's audio is
searched for the OpenAI stand-in's (bench/marker.py): `GET /stats` says when each arrived. With `--network PROFILE`
(`network = PROFILES[...]`; `POST /network?profile=P&seed=S` changes it for the calls set up from then on) the
candidate's leg is a real network's (tests/standins/network.py): the candidate's microphone is a pilot tone
(bench/continuity.py), each of its RTP packets delayed, dropped or reordered on its way to the service, and each of
the agent's on its way in, before a browser-like receive buffer (`Playout`, Opus's concealment) whose output is
judged window by window; `GET /stats?from=T0&to=T1` says per call what the shaping did and the continuity between
two `time.time()` moments. The shaping is seeded by the seed and the call id after its last `--` (all of it if none).

Where Stream's real behaviour is not described by the SDK (msid naming, whether the local participant is listed in
the join response, when the SFU renegotiates, what it does with tracks nobody subscribes to) it is a guess,
marked as such; where the SDK parses a field, it is filled.
"""

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import threading
import time
import uuid
import wave
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import av
import jwt
import numpy as np
from aiohttp import WSMsgType, web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame
from getstream.video.rtc.pb.stream.video.sfu.event import events_pb2
from getstream.video.rtc.pb.stream.video.sfu.models import models_pb2
from getstream.video.rtc.pb.stream.video.sfu.signal_rpc import signal_pb2

from bench.continuity import PILOTS, Continuity, Pilot, Playout
from bench.marker import MarkerDetector, MarkerSource, hook_receiver
from bench.marker import figures as marker_figures
from tests.standins.network import (
    PROFILES,
    Profile,
    Shaper,
    free_port,
    loopback_only,
    point_stream_coordinator_at,
    shape_incoming,
    shape_outgoing,
)

T = TypeVar("T")
SPEECH_WAV = Path(__file__).resolve().parents[2] / "bench" / "speech.wav"
RATE, FRAME = 48000, 960  # 20 ms at 48 kHz, as WebRTC carries Opus
AUDIO, VIDEO = models_pb2.TRACK_TYPE_AUDIO, models_pb2.TRACK_TYPE_VIDEO
TRACK_TYPES = {"audio": AUDIO, "video": VIDEO}
LOUD = 500  # peak (of 32767) above which a received frame counts as non-silent
SERVICE = "stream.video.sfu.signal.SignalServer"
LATE = 0.02  # an agent audio frame arriving this long after its slot is late
CAMERA_BITRATE = 1_500_000  # the pre-encoded camera: aiortc's VP8 ceiling; a browser's 720p camera sends 1.5-2.5 Mbps
CAMERA_LOOP = 90  # frames (3 s): one keyframe per loop


def now_ns() -> int:
    return time.time_ns()  # the SDK decodes timestamps as unix nanoseconds (getstream/utils datetime_from_unix_ns)


def load_speech() -> np.ndarray:
    """bench/speech.wav (16 kHz mono) at 48 kHz, padded to whole 20 ms frames."""
    with wave.open(str(SPEECH_WAV)) as wav:
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        rate = wav.getframerate()
    positions = np.arange(0, len(samples), rate / RATE)
    speech = np.interp(positions, np.arange(len(samples)), samples).astype(np.int16)
    return np.pad(speech, (0, -len(speech) % FRAME))


# Media a participant sends, paced in real time. While muted (unpublished) `recv` waits: an SFU forwards nothing.
class PacedTrack(MediaStreamTrack):
    def __init__(self, kind: str, period: float, track_id: str) -> None:
        super().__init__()
        self.kind = kind
        self._id = track_id  # aiortc puts it in the offer's msid, the SDK reads it back as the remote track's id
        self.period, self.index, self.start = period, 0, 0.0
        self.sending = asyncio.Event()
        self.sending.set()

    async def pace(self) -> int:
        await self.sending.wait()
        if not self.start:
            self.start = time.monotonic()
        self.index += 1
        delay = self.start + self.index * self.period - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -1:  # paused or starved: restart the clock rather than burst
            self.start, self.index = time.monotonic(), 0
        return self.index


class SpeechTrack(PacedTrack):
    """Real speech, looped: the candidate's microphone."""

    speech: np.ndarray | None = None
    marker: MarkerSource | None = None  # opt-in: a latency marker once a second
    pilot: Pilot | None = None  # opt-in: a pilot tone instead of the speech (bench/continuity.py)

    def __init__(self, track_id: str) -> None:
        super().__init__("audio", FRAME / RATE, track_id)
        if SpeechTrack.speech is None:
            SpeechTrack.speech = load_speech()

    async def recv(self) -> AudioFrame:
        index = await self.pace()
        assert self.speech is not None
        start = (index * FRAME) % len(self.speech)
        samples = self.speech[start : start + FRAME] if self.pilot is None else self.pilot.next()
        if self.marker:
            samples = self.marker.stamp(samples, time.time())
        return audio_frame(samples, index)


class ToneTrack(PacedTrack):
    """A 330 Hz tone: the recruiter's microphone, audible and unlike speech."""

    def __init__(self, track_id: str) -> None:
        super().__init__("audio", FRAME / RATE, track_id)

    async def recv(self) -> AudioFrame:
        index = await self.pace()
        t = (np.arange(FRAME) + index * FRAME) / RATE
        return audio_frame((6000 * np.sin(2 * np.pi * 330 * t)).astype(np.int16), index)


class GradientTrack(PacedTrack):
    """A moving gradient, 1280x720 at 30 fps: the candidate's camera (aiortc encodes it as VP8)."""

    WIDTH, HEIGHT = 1280, 720

    def __init__(self, track_id: str) -> None:
        super().__init__("video", 1 / 30, track_id)
        ramp = np.linspace(16, 235, self.WIDTH, dtype=np.uint8)
        self.luma = np.tile(ramp, (self.HEIGHT, 1))
        self.chroma = np.full((self.HEIGHT // 2, self.WIDTH), 128, dtype=np.uint8)

    async def recv(self) -> VideoFrame:
        index = await self.pace()
        planes = np.vstack([np.roll(self.luma, index * 8, axis=1), self.chroma])
        frame = VideoFrame.from_ndarray(planes, format="yuv420p")
        frame.pts, frame.time_base = index * 3000, Fraction(1, 90000)
        return frame


class EncodedCameraTrack(PacedTrack):
    """The candidate's camera as an SFU forwards it: VP8 packets (1280x720, 30 fps), encoded once per process and
    looped, so that the stand-in spends no encoder time per call; aiortc's sender packetizes them as they are."""

    packets: list[bytes] | None = None

    def __init__(self, track_id: str) -> None:
        super().__init__("video", 1 / 30, track_id)
        self.packets = EncodedCameraTrack.encoded()

    @classmethod
    def encoded(cls) -> list[bytes]:
        """A moving gradient with some grain (so that the encoder spends its bitrate), VP8 as aiortc encodes it."""
        if cls.packets is None:
            codec = av.CodecContext.create("libvpx", "w")
            codec.width, codec.height, codec.pix_fmt = GradientTrack.WIDTH, GradientTrack.HEIGHT, "yuv420p"
            codec.bit_rate, codec.gop_size, codec.qmin, codec.qmax = CAMERA_BITRATE, CAMERA_LOOP, 2, 56
            rate = str(CAMERA_BITRATE)
            codec.options = {"deadline": "realtime", "cpu-used": "-6", "lag-in-frames": "0", "bufsize": rate}
            codec.options |= {"minrate": rate, "maxrate": rate, "undershoot-pct": "100", "overshoot-pct": "15"}
            source, grain, packets = GradientTrack("encoder"), np.random.default_rng(7), []
            for index in range(CAMERA_LOOP):
                luma = np.roll(source.luma, index * 8, axis=1)
                luma = (luma + grain.integers(0, 24, luma.shape, dtype=np.uint8)).astype(np.uint8)
                frame = VideoFrame.from_ndarray(np.vstack([luma, source.chroma]), format="yuv420p")
                frame.pts, frame.time_base = index, Fraction(1, 30)
                if index == 0:
                    frame.pict_type = av.video.frame.PictureType.I
                packets.append(b"".join(bytes(packet) for packet in codec.encode(frame)))
            cls.packets = packets
        return cls.packets

    @classmethod
    def kbps(cls) -> float:
        return sum(map(len, cls.encoded())) * 8 / (CAMERA_LOOP / 30) / 1000

    async def recv(self) -> av.Packet:
        index = await self.pace()
        assert self.packets is not None
        packet = av.Packet(self.packets[index % CAMERA_LOOP])
        packet.pts, packet.time_base = index * 3000, Fraction(1, 90000)
        return packet


def audio_frame(samples: np.ndarray, index: int) -> AudioFrame:
    frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate, frame.pts, frame.time_base = RATE, index * FRAME, Fraction(1, RATE)
    return frame


SOURCES: dict[tuple[str, int], Callable[[str], PacedTrack]] = {
    ("speech", AUDIO): SpeechTrack,
    ("tone", AUDIO): ToneTrack,
    ("speech", VIDEO): GradientTrack,
    ("tone", VIDEO): GradientTrack,
}


@dataclass
class Person:
    """A scripted participant (not the agent)."""

    user_id: str
    voice: str  # "speech" or "tone"
    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:12])  # track_lookup_prefix
    published: list[int] = field(default_factory=list)  # TrackType values, in publish order

    def proto(self) -> models_pb2.Participant:
        return models_pb2.Participant(
            user_id=self.user_id,
            session_id=self.session_id,
            track_lookup_prefix=self.prefix,
            published_tracks=self.published,
            name=self.user_id,
            roles=["user"],
        )


@dataclass
class CallRecord:
    """What the agent(s) did on one call, as the SFU saw it."""

    subscriptions: list[list[tuple[str, str]]] = field(default_factory=list)  # (user_id, TRACK_TYPE_*) per request
    publisher_offers: list[str] = field(default_factory=list)  # SDP of every SetPublisher
    subscriber_answers: list[str] = field(default_factory=list)
    agent_frames: int = 0  # audio frames received from the agent
    agent_loud_frames: int = 0  # of which non-silent (peak > LOUD)
    video_frames_sent: int = 0  # camera frames the stand-in actually sent to the agent
    stats: int = 0  # SendStats requests
    health_checks: int = 0
    joins: int = 0  # SFU join requests (a reconnect counts again)
    messages: list[dict[str, Any]] = field(default_factory=list)  # chat messages (transcript mirror)

    agent_frame_times: deque[float] = field(default_factory=lambda: deque(maxlen=6000))  # monotonic, last 2 min
    # The agent's audio packets as they arrive (what an SFU sees; one Opus packet is one 20 ms frame): a frame is late
    # if it arrives more than LATE after its slot (its RTP timestamp plus the track's typical path delay, the median
    # over the last 10 s); missing if the timestamps skip slots. See `time_packets`.
    late_frames: int = 0
    missing_frames: int = 0
    worst_lateness: float = 0.0  # seconds, since the last `GET /stats?reset=1`
    largest_gap: float = 0.0  # seconds between two frames, since the last `GET /stats?reset=1`
    message_users: list[str] = field(default_factory=list)  # who each chat message (transcript mirror) is from
    marker_source: MarkerSource | None = None  # with markers: in the candidate's microphone
    marker_detector: MarkerDetector | None = None  # with markers: in the agent's audio
    # With a network profile: the shaping each way, the browser-like buffer, and the continuity of what it played.
    shaped_up: Shaper | None = None  # the candidate's microphone, on its way to the service
    shaped_down: Shaper | None = None  # the agent's audio, on its way in
    playout: Playout | None = None
    continuity: Continuity | None = None

    def largest_frame_gap(self, start: float, end: float) -> float:
        """The longest time without an audio frame from the agent between two `time.monotonic()` moments."""
        times = [start, *(t for t in list(self.agent_frame_times) if start < t < end), end]
        return max(b - a for a, b in itertools.pairwise(times))

    def subscribed_types(self) -> set[str]:
        return {track_type for request in self.subscriptions for _, track_type in request}

    def figures(self, reset: bool = False, start: float = 0.0, end: float = float("inf")) -> dict[str, Any]:
        figures: dict[str, Any] = {
            "agent_frames": self.agent_frames,
            "loud_frames": self.agent_loud_frames,
            "late_frames": self.late_frames,
            "missing_frames": self.missing_frames,
            "worst_lateness_ms": self.worst_lateness * 1000,
            "largest_gap_ms": self.largest_gap * 1000,
            "video_frames_sent": self.video_frames_sent,
            "video_subscriptions": sum(any(t == "TRACK_TYPE_VIDEO" for _, t in r) for r in self.subscriptions),
            "subscribed": sorted(self.subscribed_types()),
            "publisher_offers": len(self.publisher_offers),
            "joins": self.joins,
            "speakers": sorted(set(self.message_users)),
        }
        if self.marker_source or self.marker_detector:
            figures |= marker_figures(self.marker_detector, self.marker_source)
        if self.continuity is not None:
            figures["continuity"] = self.continuity.figures(start, end)
        if self.shaped_up or self.shaped_down or self.playout:
            shaped = {"up": self.shaped_up, "down": self.shaped_down}
            figures["network"] = {way: shaper.figures() for way, shaper in shaped.items() if shaper}
            if self.playout:
                figures["network"]["playout"] = self.playout.figures()
        if reset:
            self.worst_lateness = self.largest_gap = 0.0
        return figures


class AgentSession:
    """One agent's SFU session: its signalling WebSocket and its two peer connections."""

    def __init__(self, call: "Call", user_id: str, session_id: str, ws: web.WebSocketResponse) -> None:
        self.call, self.user_id, self.session_id, self.ws = call, user_id, session_id, ws
        self.publisher: RTCPeerConnection | None = None
        self.subscriber: RTCPeerConnection | None = None
        self.sent: dict[tuple[str, int], MediaStreamTrack] = {}  # (session_id, track type) -> on the subscriber PC
        self.negotiating = asyncio.Lock()
        self.answered = asyncio.Event()
        self.wanted: set[tuple[str, int]] = set()  # (session_id, track type), from the last UpdateSubscriptions
        self.tasks: set[asyncio.Task[Any]] = set()

    async def send(self, **event: Any) -> None:
        if not self.ws.closed:
            await self.ws.send_bytes(events_pb2.SfuEvent(**event).SerializeToString())

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for pc in (self.publisher, self.subscriber):
            if pc:
                await pc.close()
        for track in self.sent.values():
            track.stop()


class Call:
    def __init__(self, call_type: str, call_id: str) -> None:
        self.call_type, self.call_id, self.cid = call_type, call_id, f"{call_type}:{call_id}"
        self.people: dict[str, Person] = {}
        self.agents: dict[str, AgentSession] = {}  # by session_id
        self.record = CallRecord()
        self.created_at = now_ns()
        self.agent_joined = asyncio.Event()

    def json(self, created_by: str = "ai-interviewer") -> dict[str, Any]:
        # CallResponse has many more fields; the SDK only caches the object (from_dict(infer_missing=True)).
        return {
            "type": self.call_type,
            "id": self.call_id,
            "cid": self.cid,
            "current_session_id": "",
            "created_by": {"id": created_by, "role": "user", "custom": {}, "teams": []},
            "custom": {},
            "created_at": self.created_at,
            "updated_at": self.created_at,
            "backstage": False,
            "recording": False,
            "transcribing": False,
            "captioning": False,
            "blocked_user_ids": [],
        }


class StreamStandIn:
    def __init__(self, api_key: str = "stream-key", api_secret: str = "stream-secret", port: int | None = None) -> None:
        self.api_key, self.api_secret = api_key, api_secret
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.calls: dict[str, Call] = {}  # by call_id
        self.calls_lock = threading.Lock()  # calls are made from the test's thread and the stand-in's
        self.requests: list[tuple[str, str]] = []  # every REST request (method, path)
        self.unhandled: list[tuple[str, str]] = []
        self.sfu_tokens: dict[str, tuple[str, str]] = {}  # SFU token -> (call_id, user_id)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="stream-standin", daemon=True)
        self.runner: web.AppRunner | None = None
        self._original_client: Any = None
        self.scripted_candidate: tuple[str, bool] | None = None  # (user_id, camera): joins every call an agent joins
        self.markers = False  # latency markers in the candidate's microphone, searched for in the agent's audio
        self.network: Profile | None = None  # the candidate's leg, for the calls set up from now on
        self.seed = "1"

    # -- lifecycle, callable from any thread or loop ----------------------------------------------------------------
    async def __aenter__(self) -> "StreamStandIn":
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Serves, and points every `getstream.Edge` built in this process from now on at the stand-in."""
        self.thread.start()
        await self.run(self._serve())
        point_stream_coordinator_at(f"ws://127.0.0.1:{self.port}/api/v2/connect")
        self.attach()

    async def serve(self) -> None:
        """Serves, and leaves this process's getstream alone: the stand-in as a process of its own."""
        self.thread.start()
        if self.scripted_candidate and self.scripted_candidate[1]:
            await asyncio.to_thread(EncodedCameraTrack.encoded)  # before any call: about a second of encoding
        await self.run(self._serve())

    async def stop(self) -> None:
        self.detach()
        await self.run(self._shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.to_thread(self.thread.join, 5)
        if not self.thread.is_alive():
            self.loop.close()

    async def run(self, coro: Awaitable[T]) -> T:
        """Runs `coro` on the stand-in's loop, awaited from the caller's loop."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return await asyncio.wrap_future(future)

    def attach(self) -> None:
        """Every `getstream.Edge` (or subclass) built from now on gets a REST client pointing here.

        The edge builds `AsyncStream(user_agent=...)` with Stream's hard-coded base URL (STREAM_BASE_URL is not
        honoured); replacing the name the edge module calls lets the service build its own edge, whatever its class.
        """
        from getstream import AsyncStream
        from vision_agents.plugins.getstream import stream_edge_transport

        self._original_client = stream_edge_transport.AsyncStream
        stream_edge_transport.AsyncStream = functools.partial(  # type: ignore[misc]
            AsyncStream, api_key=self.api_key, api_secret=self.api_secret, base_url=self.url
        )

    def detach(self) -> None:
        from vision_agents.plugins.getstream import stream_edge_transport

        if self._original_client is not None:
            stream_edge_transport.AsyncStream = self._original_client  # type: ignore[misc]
            self._original_client = None

    def make_edge(self) -> Any:
        """A real `getstream.Edge()` pointing here (REST client and coordinator WebSocket): a `make_edge` for tests.

        Once started, any edge the service builds itself points here too (`attach`): tests of the product's own edge
        class pass no `make_edge` at all.
        """
        from vision_agents.plugins import getstream

        assert self._original_client is not None, "start the stand-in first"
        return getstream.Edge()

    # -- the script, from the test's loop ---------------------------------------------------------------------------
    def call(self, call_id: str, call_type: str = "default") -> Call:
        with self.calls_lock:
            if call_id not in self.calls:
                self.calls[call_id] = Call(call_type, call_id)
            return self.calls[call_id]

    def record(self, call_id: str) -> CallRecord:
        return self.call(call_id).record

    async def join(
        self, call_id: str, user_id: str = "candidate-7", voice: str = "speech", camera: bool = False
    ) -> None:
        """Someone joins and publishes a microphone (and a camera)."""
        await self.run(self._join(call_id, user_id, voice, [AUDIO, VIDEO] if camera else [AUDIO]))

    async def candidate_joins(self, call_id: str, user_id: str = "candidate-7", camera: bool = False) -> None:
        await self.join(call_id, user_id, "speech", camera)

    async def recruiter_joins(self, call_id: str, user_id: str = "recruiter-1") -> None:
        await self.join(call_id, user_id, "tone")

    async def publish(self, call_id: str, user_id: str, kind: str) -> None:
        await self.run(self._publish(call_id, user_id, TRACK_TYPES[kind]))

    async def unpublish(self, call_id: str, user_id: str, kind: str) -> None:
        """Mute: Stream tells subscribers `track_unpublished(cause=USER_MUTED)` and forwards nothing more."""
        await self.run(self._unpublish(call_id, user_id, TRACK_TYPES[kind]))

    async def leave(self, call_id: str, user_id: str) -> None:
        await self.run(self._leave(call_id, user_id))

    async def end_call(self, call_id: str) -> None:
        """The SFU's `call_ended`; the WebSocket stays open (the SDK treats a server close as a lost connection)."""
        await self.run(self._end_call(call_id))

    async def wait_agent_joined(self, call_id: str) -> None:
        await self.run(asyncio.wait_for(self.call(call_id).agent_joined.wait(), 20))

    # -- servers ----------------------------------------------------------------------------------------------------
    async def _serve(self) -> None:
        app = web.Application(middlewares=[self._log_requests])
        r = app.router
        r.add_patch("/api/v2/users", self.update_users)
        r.add_post("/api/v2/users", self.update_users)
        r.add_post("/api/v2/video/call/{type}/{id}", self.get_or_create_call)
        r.add_post("/api/v2/video/call/{type}/{id}/join", self.join_call)
        r.add_post("/api/v2/chat/channels/{type}/{id}/query", self.channel)
        r.add_post("/api/v2/chat/channels/{type}/{id}/message", self.send_message)
        r.add_put("/api/v2/chat/messages/{id}", self.update_message)
        r.add_patch("/api/v2/chat/messages/{id}", self.update_message)
        r.add_patch("/api/v2/chat/messages/{id}/ephemeral", self.update_message)
        r.add_delete("/api/v2/chat/messages/{id}", self.delete_message)
        r.add_get("/api/v2/connect", self.coordinator_ws)
        r.add_get("/sfu/{call_id}/ws", self.sfu_ws)
        r.add_post("/sfu/{call_id}/" + SERVICE + "/{method}", self.twirp)
        r.add_get("/stats", self.stats)
        r.add_post("/network", self.set_network)
        r.add_route("*", "/{tail:.*}", self.not_found)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def _shutdown(self) -> None:
        for call in self.calls.values():
            for agent in list(call.agents.values()):
                await agent.close()
        if self.runner:
            await self.runner.cleanup()

    @web.middleware
    async def _log_requests(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        return await handler(request)

    def user_id(self, request: web.Request) -> str | None:
        """From the JWT in `Authorization` (the SDK signs user and server tokens with the secret, HS256)."""
        token = request.headers.get("Authorization", "")
        claims = jwt.decode(token, self.api_secret, algorithms=["HS256"], options={"verify_exp": False})
        return claims.get("user_id")

    @staticmethod
    def ok(body: dict[str, Any]) -> web.Response:
        return web.json_response(body | {"duration": "0.10ms"})

    async def stats(self, request: web.Request) -> web.Response:
        """Per call and in total, what the agents did; `?reset=1` starts a new window for the worst lateness/gap."""
        reset = request.query.get("reset") == "1"
        start, end = float(request.query.get("from", 0)), float(request.query.get("to", "inf"))
        with self.calls_lock:
            calls = {call_id: call.record.figures(reset, start, end) for call_id, call in self.calls.items()}
        total: dict[str, Any] = {}
        for figures in calls.values():
            for key, value in figures.items():
                if isinstance(value, int | float):
                    combine = max if key in ("worst_lateness_ms", "largest_gap_ms") else sum
                    total[key] = combine([total.get(key, 0), value])
        camera = self.scripted_candidate is not None and self.scripted_candidate[1]
        kbps = EncodedCameraTrack.kbps() if camera else 0.0
        return web.json_response({"calls": calls, "total": total, "camera": camera, "camera_kbps": kbps})

    async def set_network(self, request: web.Request) -> web.Response:
        """`?profile=NAME&seed=S`: the candidate's leg for the calls set up from now on (`none`: not shaped)."""
        name = request.query.get("profile", "none")
        self.network = None if name == "none" else PROFILES[name]
        self.seed = request.query.get("seed", self.seed)
        return web.json_response({"profile": name, "seed": self.seed})

    def shaper(self, call: "Call", way: str) -> Shaper | None:
        if self.network is None:
            return None
        return Shaper(self.network, f"{self.seed}:{call.call_id.rsplit('--', 1)[-1]}:{way}")

    async def not_found(self, request: web.Request) -> web.Response:
        self.unhandled.append((request.method, request.path))
        # Stream's error shape: the SDK reads every one of these keys when it builds the exception.
        error = {"code": 4, "message": f"stand-in: no route {request.method} {request.path}", "StatusCode": 404}
        error |= {"duration": "0.10ms", "more_info": "", "details": []}
        return web.json_response(error, status=404)

    # -- coordinator REST -------------------------------------------------------------------------------------------
    async def update_users(self, request: web.Request) -> web.Response:
        body = await request.json()
        users = body["users"]
        listed = users if isinstance(users, list) else list(users.values())
        out = {}
        for user in listed:
            name = (user.get("set") or user).get("name", user["id"])
            out[user["id"]] = {"id": user["id"], "name": name, "role": "user", "custom": {}, "teams": []}
            out[user["id"]] |= {"created_at": now_ns(), "updated_at": now_ns(), "banned": False, "online": False}
        return self.ok({"users": out})

    async def get_or_create_call(self, request: web.Request) -> web.Response:
        call = self.call(request.match_info["id"], request.match_info["type"])
        body = await request.json() if request.can_read_body else {}
        created_by = (body.get("data") or {}).get("created_by_id") or self.user_id(request) or "ai-interviewer"
        # With ?connection_id= this is the SDK's "watch" (answer parsed as JoinCallResponse, fields unused).
        return self.ok({"call": call.json(created_by), "members": [], "created": True, "own_capabilities": []})

    async def join_call(self, request: web.Request) -> web.Response:
        call = self.call(request.match_info["id"], request.match_info["type"])
        user_id = self.user_id(request) or "unknown"
        token = f"sfu-{uuid.uuid4().hex}"
        self.sfu_tokens[token] = (call.call_id, user_id)
        server = {
            "edge_name": "standin-local",
            "url": f"{self.url}/sfu/{call.call_id}/",  # Twirp base: the SDK appends "<service>/<Method>"
            "ws_endpoint": f"ws://127.0.0.1:{self.port}/sfu/{call.call_id}/ws",
        }
        credentials = {"server": server, "token": token, "ice_servers": []}  # no STUN/TURN: loopback only
        stats = {"reporting_interval_ms": 8000, "enable_rtc_stats": False}
        return self.ok({"call": call.json(), "members": [], "credentials": credentials, "stats_options": stats})

    async def channel(self, request: web.Request) -> web.Response:
        kind, cid = request.match_info["type"], request.match_info["id"]
        channel = {"type": kind, "id": cid, "cid": f"{kind}:{cid}", "custom": {}, "created_at": now_ns()}
        channel |= {"updated_at": now_ns(), "disabled": False, "frozen": False}
        return self.ok({"channel": channel, "members": [], "messages": [], "pinned_messages": [], "read": []})

    def message_json(self, message_id: str, body: dict[str, Any]) -> dict[str, Any]:
        fields = body.get("message") or body.get("set") or {}
        message = {"id": message_id, "type": "regular", "text": fields.get("text", ""), "custom": {}}
        return message | {"created_at": now_ns(), "updated_at": now_ns(), "attachments": [], "mentioned_users": []}

    async def send_message(self, request: web.Request) -> web.Response:
        body = await request.json()
        message = self.message_json((body.get("message") or {}).get("id") or str(uuid.uuid4()), body)
        record = self.call(request.match_info["id"]).record
        record.messages.append(message)
        record.message_users.append(str((body.get("message") or {}).get("user_id")))
        return self.ok({"message": message})

    async def update_message(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        return self.ok({"message": self.message_json(request.match_info["id"], body)})

    async def delete_message(self, request: web.Request) -> web.Response:
        return self.ok({"message": self.message_json(request.match_info["id"], {}) | {"type": "deleted"}})

    # -- coordinator WebSocket --------------------------------------------------------------------------------------
    async def coordinator_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        connection_id = str(uuid.uuid4())
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if "token" in data:
                user_id = jwt.decode(data["token"], self.api_secret, algorithms=["HS256"])["user_id"]
                me = {"id": user_id, "role": "user", "created_at": now_ns(), "updated_at": now_ns()}
                await ws.send_json({"type": "connection.ok", "connection_id": connection_id, "me": me})
            elif data.get("type") == "health.check":
                await ws.send_json({"type": "health.check", "connection_id": connection_id})
        return ws

    # -- SFU signalling WebSocket -----------------------------------------------------------------------------------
    async def sfu_ws(self, request: web.Request) -> web.WebSocketResponse:
        # websocket-client sends the protobuf bytes in TEXT frames: never UTF-8-decode them.
        ws = web.WebSocketResponse(decode_text=False)
        await ws.prepare(request)
        call = self.call(request.match_info["call_id"])
        agent: AgentSession | None = None
        try:
            async for message in ws:
                if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                data = message.data if isinstance(message.data, bytes) else message.data.encode()
                sfu_request = events_pb2.SfuRequest()
                sfu_request.ParseFromString(data)
                kind = sfu_request.WhichOneof("request_payload")
                if kind == "join_request":
                    agent = await self.sfu_join(call, sfu_request.join_request, ws)
                elif kind == "health_check_request":
                    call.record.health_checks += 1
                    await ws.send_bytes(
                        events_pb2.SfuEvent(health_check_response=events_pb2.HealthCheckResponse()).SerializeToString()
                    )
        finally:
            if agent and call.agents.get(agent.session_id) is agent:
                del call.agents[agent.session_id]
                await agent.close()
        return ws

    async def sfu_join(self, call: Call, join: events_pb2.JoinRequest, ws: web.WebSocketResponse) -> AgentSession:
        _, user_id = self.sfu_tokens[join.token]
        call.record.joins += 1
        previous = call.agents.pop(join.session_id, None)  # a fast reconnect reuses the session id
        if previous:
            await previous.close()
        agent = AgentSession(call, user_id, join.session_id, ws)
        call.agents[join.session_id] = agent
        # Guess: the real SFU lists the joining participant itself too; the SDK recognises it by session_id.
        me = models_pb2.Participant(
            user_id=user_id, session_id=join.session_id, track_lookup_prefix=uuid.uuid4().hex[:12]
        )
        participants = [person.proto() for person in call.people.values()] + [me]
        state = models_pb2.CallState(participants=participants)
        response = events_pb2.JoinResponse(call_state=state, fast_reconnect_deadline_seconds=30)
        await agent.send(join_response=response)
        call.agent_joined.set()
        return agent

    # -- SFU Twirp --------------------------------------------------------------------------------------------------
    async def twirp(self, request: web.Request) -> web.Response:
        call, method = self.call(request.match_info["call_id"]), request.match_info["method"]
        body = await request.read()
        handlers = {
            "SetPublisher": (signal_pb2.SetPublisherRequest, self.set_publisher),
            "SendAnswer": (signal_pb2.SendAnswerRequest, self.send_answer),
            "UpdateSubscriptions": (signal_pb2.UpdateSubscriptionsRequest, self.update_subscriptions),
            "SendStats": (signal_pb2.SendStatsRequest, self.send_stats),
        }
        responses = {
            "IceTrickle": signal_pb2.ICETrickleResponse,
            "UpdateMuteStates": signal_pb2.UpdateMuteStatesResponse,
            "IceRestart": signal_pb2.ICERestartResponse,
            "SendMetrics": signal_pb2.SendMetricsResponse,
            "StartNoiseCancellation": signal_pb2.StartNoiseCancellationResponse,
            "StopNoiseCancellation": signal_pb2.StopNoiseCancellationResponse,
        }
        if method in handlers:
            request_type, handler = handlers[method]
            message = request_type()
            message.ParseFromString(body)
            agent = call.agents.get(message.session_id)
            if agent is None:  # Twirp errors must be JSON, or SDK 4.3 fails building the exception
                error = {"code": "not_found", "msg": f"no session {message.session_id}", "meta": {}}
                return web.json_response(error, status=404)
            answer = await handler(agent, message)
        elif method in responses:
            answer = responses[method]()
        else:
            return web.json_response({"code": "bad_route", "msg": method, "meta": {}}, status=404)
        return web.Response(body=answer.SerializeToString(), content_type="application/protobuf")

    async def set_publisher(self, agent: AgentSession, req: signal_pb2.SetPublisherRequest) -> Any:
        agent.call.record.publisher_offers.append(req.sdp)
        if self.scripted_candidate and self.scripted_candidate[0] not in agent.call.people:
            agent.spawn(self._scripted_candidate_joins(agent.call))
        if agent.publisher:  # a second SetPublisher (fast reconnect): a fresh peer connection
            await agent.publisher.close()
        pc = agent.publisher = RTCPeerConnection()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                record = agent.call.record
                if self.markers:
                    record.marker_detector = MarkerDetector()
                agent.spawn(self.count_agent_audio(record, track))
                for receiver in pc.getReceivers():
                    if receiver.track is not track:
                        continue
                    record.shaped_down = self.shaper(agent.call, "down")
                    if record.shaped_down:  # the candidate's browser: the network, then a NetEq-like buffer
                        record.continuity = Continuity(PILOTS["interviewer"])
                        record.playout = Playout(track._queue.put_nowait, record.continuity, time.time)
                        receiver._handle_rtp_packet = record.playout.add
                    if record.marker_detector:
                        hook_receiver(receiver, record.marker_detector, time.time)
                    if record.shaped_down:
                        shape_incoming(receiver, record.shaped_down)
                    time_packets(receiver, record)  # as sent: before the network

        await pc.setRemoteDescription(RTCSessionDescription(sdp=req.sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return signal_pb2.SetPublisherResponse(sdp=pc.localDescription.sdp, session_id=agent.session_id)

    @staticmethod
    async def count_agent_audio(record: CallRecord, track: MediaStreamTrack) -> None:
        detector = record.marker_detector
        try:
            while True:
                frame = await track.recv()
                if detector:
                    detector.feed(frame, time.time())
                record.agent_frames += 1
                record.agent_frame_times.append(time.monotonic())
                if int(np.abs(frame.to_ndarray().astype(np.int32)).max(initial=0)) > LOUD:
                    record.agent_loud_frames += 1
        except MediaStreamError:
            pass

    async def send_stats(self, agent: AgentSession, _: signal_pb2.SendStatsRequest) -> Any:
        agent.call.record.stats += 1
        return signal_pb2.SendStatsResponse()

    async def update_subscriptions(self, agent: AgentSession, req: signal_pb2.UpdateSubscriptionsRequest) -> Any:
        wanted = [(t.user_id, models_pb2.TrackType.Name(t.track_type)) for t in req.tracks]
        agent.call.record.subscriptions.append(wanted)
        agent.wanted = {(t.session_id, t.track_type) for t in req.tracks}
        self.forward(agent)
        agent.spawn(self.negotiate(agent))  # the SFU answers the RPC, then (re)offers the subscriber connection
        return signal_pb2.UpdateSubscriptionsResponse()

    async def send_answer(self, agent: AgentSession, req: signal_pb2.SendAnswerRequest) -> Any:
        if req.peer_type == models_pb2.PEER_TYPE_SUBSCRIBER and agent.subscriber:
            agent.call.record.subscriber_answers.append(req.sdp)
            await agent.subscriber.setRemoteDescription(RTCSessionDescription(sdp=req.sdp, type="answer"))
            agent.answered.set()
        return signal_pb2.SendAnswerResponse()

    async def negotiate(self, agent: AgentSession) -> None:
        """Offer the agent every published track it subscribed to and is not yet receiving.

        An SFU forwards only what a subscriber asked for: a camera nobody subscribed to is never sent.
        Guess: stream id `<track_lookup_prefix>:TRACK_TYPE_AUDIO`, track id `<prefix>:TRACK_TYPE_AUDIO:<n>`.
        """
        async with agent.negotiating:
            call = agent.call
            people = {person.session_id: person for person in call.people.values()}
            new = []
            for session_id, track_type in sorted(agent.wanted):
                person = people.get(session_id)
                if person and track_type in person.published and (session_id, track_type) not in agent.sent:
                    new.append((person, track_type))
            if not new:
                return
            if agent.subscriber is None:
                agent.subscriber = RTCPeerConnection()
            for person, track_type in new:
                name = f"{person.prefix}:{models_pb2.TrackType.Name(track_type)}"
                make = SOURCES[(person.voice, track_type)]
                if track_type == VIDEO and self.scripted_candidate:  # own process: packets encoded once
                    make = EncodedCameraTrack
                track = make(f"{name}:{len(agent.sent)}")
                if self.markers and isinstance(track, SpeechTrack):
                    track.marker = call.record.marker_source = MarkerSource()
                if track_type == VIDEO:
                    track = CountingTrack(track, call.record)
                sender = agent.subscriber.addTrack(track)
                sender._stream_id = name
                shaper = self.shaper(call, "up") if isinstance(track, SpeechTrack) else None
                if shaper and isinstance(track, SpeechTrack):
                    track.pilot = Pilot(PILOTS["candidate"])
                    call.record.shaped_up = shaper
                    shape_outgoing(sender._ssrc, shaper)
                agent.sent[(person.session_id, track_type)] = track
            await agent.subscriber.setLocalDescription(await agent.subscriber.createOffer())
            agent.answered.clear()
            await agent.send(subscriber_offer=events_pb2.SubscriberOffer(sdp=agent.subscriber.localDescription.sdp))
            with contextlib.suppress(TimeoutError):  # the agent left or never answered: the next change offers again
                await asyncio.wait_for(agent.answered.wait(), 10)

    @staticmethod
    def forward(agent: AgentSession) -> None:
        """Media flows on a track while it is published and subscribed to: an SFU forwards nothing else.

        Guess: a muted, unsubscribed or departed track stays in the SDP (no renegotiation), its packets just stop.
        """
        published = {(p.session_id, t) for p in agent.call.people.values() for t in p.published}
        for key, track in agent.sent.items():
            sending = pacer(track).sending
            if key in published and key in agent.wanted:
                sending.set()
            else:
                sending.clear()

    # -- the script, on the stand-in's loop ------------------------------------------------------------------------
    async def _scripted_candidate_joins(self, call: Call) -> None:
        """Own-process mode: the candidate joins once the agent has joined and published its microphone.

        Sooner (right after the join response) the SDK 4.3 sometimes misses the candidate's `track_published`, never
        subscribes, and the edge's track resolver times out: a guess at a window the real SFU may have too.
        """
        await asyncio.sleep(0.5)
        assert self.scripted_candidate is not None
        user_id, camera = self.scripted_candidate
        if user_id not in call.people:
            await self._join(call.call_id, user_id, "speech", [AUDIO, VIDEO] if camera else [AUDIO])

    async def broadcast(self, call: Call, **event: Any) -> None:
        for agent in list(call.agents.values()):
            await agent.send(**event)

    async def _join(self, call_id: str, user_id: str, voice: str, tracks: list[int]) -> None:
        call = self.call(call_id)
        person = call.people[user_id] = Person(user_id, voice)
        await self.broadcast(
            call, participant_joined=events_pb2.ParticipantJoined(call_cid=call.cid, participant=person.proto())
        )
        for track_type in tracks:
            await self._publish(call_id, user_id, track_type)

    async def _publish(self, call_id: str, user_id: str, track_type: int) -> None:
        call = self.call(call_id)
        person = call.people[user_id]
        if track_type not in person.published:
            person.published.append(track_type)
        for agent in call.agents.values():
            self.forward(agent)
        published = events_pb2.TrackPublished(
            user_id=user_id, session_id=person.session_id, type=track_type, participant=person.proto()
        )
        await self.broadcast(call, track_published=published)

    async def _unpublish(self, call_id: str, user_id: str, track_type: int) -> None:
        call = self.call(call_id)
        person = call.people[user_id]
        if track_type in person.published:
            person.published.remove(track_type)
        for agent in call.agents.values():
            self.forward(agent)
        unpublished = events_pb2.TrackUnpublished(
            user_id=user_id,
            session_id=person.session_id,
            type=track_type,
            cause=models_pb2.TRACK_UNPUBLISH_REASON_USER_MUTED,
            participant=person.proto(),
        )
        await self.broadcast(call, track_unpublished=unpublished)

    async def _leave(self, call_id: str, user_id: str) -> None:
        call = self.call(call_id)
        person = call.people.pop(user_id)
        for agent in call.agents.values():
            self.forward(agent)
        left = events_pb2.ParticipantLeft(call_cid=call.cid, participant=person.proto())
        await self.broadcast(call, participant_left=left)

    async def _end_call(self, call_id: str) -> None:
        call = self.call(call_id)
        await self.broadcast(call, call_ended=events_pb2.CallEnded(reason=models_pb2.CALL_ENDED_REASON_ENDED))


class CountingTrack(MediaStreamTrack):
    """Counts the camera frames actually pulled by the subscriber connection (i.e. sent to the agent)."""

    def __init__(self, inner: PacedTrack, record: CallRecord) -> None:
        super().__init__()
        self.kind, self._id, self.inner, self.record = inner.kind, inner.id, inner, record

    async def recv(self) -> Any:
        frame = await self.inner.recv()
        self.record.video_frames_sent += 1
        return frame

    def stop(self) -> None:
        self.inner.stop()
        super().stop()


def time_packets(receiver: Any, record: CallRecord, clock: int = RATE, frame: int = FRAME) -> None:
    """Times the agent's audio packets as they arrive (after SRTP, before the jitter buffer and the decoder)."""
    handle = receiver._handle_rtp_packet  # aiortc's router calls it for each RTP packet of this receiver
    offsets: deque[float] = deque(maxlen=500)  # arrival minus RTP time, the last 10 s
    anchor = 0.0  # their median, recomputed every second: the typical arrival, as a jitter buffer would settle on
    last: tuple[float, int, int] | None = None  # the latest packet: arrival, RTP timestamp, timestamp unwrapped

    async def timed(packet: Any, arrival_time_ms: int) -> None:
        nonlocal anchor, last
        now = time.monotonic()
        step = None if last is None else (packet.timestamp - last[1]) % (1 << 32)
        if step is None or 0 < step < 1 << 31:  # not a retransmission (same timestamp) nor a reordered packet
            if last is not None:
                record.largest_gap = max(record.largest_gap, now - last[0])
                record.missing_frames += max(0, round(step / frame) - 1)
            elapsed = packet.timestamp if last is None else last[2] + step
            offset = now - elapsed / clock
            offsets.append(offset)
            if len(offsets) < 50 or (elapsed // frame) % 50 == 0:
                anchor = float(np.median(offsets))
            record.late_frames += offset - anchor > LATE
            record.worst_lateness = max(record.worst_lateness, offset - anchor)
            last = (now, packet.timestamp, elapsed)
        await handle(packet, arrival_time_ms)

    receiver._handle_rtp_packet = timed


def pacer(track: MediaStreamTrack) -> PacedTrack:
    return track.inner if isinstance(track, CountingTrack) else track  # type: ignore[return-value]


def point_getstream_at(url: str, api_key: str = "stream-key", api_secret: str = "stream-secret") -> None:
    """What `StreamStandIn.start` does for its own process, for another one: every `getstream.Edge` built in this
    process from now on talks to the stand-in at `url` (REST client and coordinator WebSocket)."""
    from getstream import AsyncStream
    from vision_agents.plugins.getstream import stream_edge_transport

    stream_edge_transport.AsyncStream = functools.partial(  # type: ignore[misc]
        AsyncStream, api_key=api_key, api_secret=api_secret, base_url=url
    )
    point_stream_coordinator_at(url.replace("http://", "ws://", 1) + "/api/v2/connect")


async def serve(
    port: int, camera: bool, candidate: str = "candidate-7", markers: bool = False, network: str | None = None
) -> None:
    """The stand-in as a process of its own, until it is terminated."""
    loopback_only()
    standin = StreamStandIn(port=port)
    standin.scripted_candidate = (candidate, camera)
    standin.markers = markers
    standin.network = PROFILES[network] if network else None
    await standin.serve()
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Stream's side of calls, as a process of its own")
    parser.add_argument("port", type=int)
    parser.add_argument("--camera", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--candidate", default="candidate-7")
    parser.add_argument("--markers", action="store_true", help="latency markers both ways (bench/marker.py)")
    parser.add_argument("--network", choices=sorted(PROFILES), help="the candidate's leg (tests/standins/network.py)")
    arguments = parser.parse_args()
    asyncio.run(serve(arguments.port, arguments.camera, arguments.candidate, arguments.markers, arguments.network))
