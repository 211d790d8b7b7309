"""Keep every packet of a test or bench process on 127.0.0.1: call `loopback_only()` before any WebRTC peer starts.

- aioice leaves 127.0.0.1 out of its host candidates, so two local peers would talk over another interface;
- aiortc adds Google's STUN server when a peer connection is given no ICE servers;
- the getstream SDK pings 8.8.8.8, 1.1.1.1 and 208.67.222.222 every second while a call is joined;
- onnxruntime sends a telemetry DNS lookup unless told not to before it is imported: `tests/__init__.py` does that,
  first thing in every test and bench process.
"""

import asyncio
import contextlib
import math
import random
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def loopback_only() -> None:
    import aioice.ice
    from aiortc.rtcicetransport import RTCIceGatherer
    from getstream.video.rtc.network_monitor import NetworkMonitor

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    RTCIceGatherer.getDefaultIceServers = classmethod(lambda cls: [])  # type: ignore[assignment,method-assign]

    async def no_pings(self: NetworkMonitor) -> None:
        return None

    NetworkMonitor.start_monitoring = no_pings  # type: ignore[method-assign]


def point_stream_coordinator_at(url: str) -> None:
    """The getstream SDK's coordinator WebSocket URI is hard-coded to Stream's host: point it at a stand-in."""
    from getstream.video.rtc.coordinator.ws import StreamAPIWS

    StreamAPIWS.__init__.__kwdefaults__["uri"] = url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- Network profiles: a real network's loss, jitter, spikes and reordering, applied in a stand-in's own process ------
# Everything stays on 127.0.0.1: a stand-in delays, drops or reorders each RTP packet of a track on its way out (the
# candidate's microphone, sent to the service) or on its way in (the interviewer's voice, before the stand-in's
# receive buffer), on its own event loop. Seeded: the same profile, seed and call see the same pattern, packet by
# packet, whatever product is served.


@dataclass(frozen=True)
class Profile:
    """One direction of a network path, packet by packet.

    Each packet is dropped with probability `loss`; else it is queued behind the packets sent before it (first in,
    first out) for an exponential delay of mean `jitter_ms`; a spike (`spikes` a second, a Poisson process, each
    lasting a uniform draw from `spike_ms`) holds every packet sent during it until it ends (a Wi-Fi channel busy
    or retransmitting: the packets come out in a burst); and a share `reorder` of the packets skips the queue and
    arrives 22-32 ms after it would have (so after the one or two packets sent next).
    """

    name: str
    loss: float = 0.0
    jitter_ms: float = 0.0
    spikes: float = 0.0
    spike_ms: tuple[float, float] = (0.0, 0.0)
    reorder: float = 0.0


PROFILES = {
    "clean": Profile("clean"),
    # home Wi-Fi: 1% loss, delay p95 about 27 ms over the fastest packet, 60-80 ms spikes 0.3 times a second, ~5%
    # of packets reordered (simulated over 60 s: added delay p50 3 ms, p95 28-30 ms, 4.7-5.3% reordered)
    "wifi": Profile("wifi", loss=0.01, jitter_ms=4.0, spikes=0.3, spike_ms=(60.0, 80.0), reorder=0.06),
    # a worse one: 3% loss, 60 ms jitter (simulated: added delay p50 16 ms, p95 57-60 ms, about 4% reordered)
    "worse": Profile("worse", loss=0.03, jitter_ms=16.5, spikes=0.3, spike_ms=(60.0, 80.0), reorder=0.06),
}


class Shaper:
    """Applies a `Profile` to the packets handed to `push`, each delivered by calling `deliver()` when its time comes
    (on the running loop). Counts what it did: `figures()`."""

    def __init__(self, profile: Profile, seed: str) -> None:
        self.profile = profile
        self.draws = random.Random(f"{seed}:packets")  # per packet, always the same draws in the same order
        self.spike_draws = random.Random(f"{seed}:spikes")  # the spikes' times, from the first packet on
        self.sent = self.dropped = self.reordered = self.spiked = 0
        self.delays: deque[float] = deque(maxlen=3000)  # seconds added to each packet delivered, the last minute
        self.queue_until = 0.0  # when the last packet in the queue comes out (loop time)
        self.spike_at = self.spike_end = 0.0
        self.delivered_up_to = -1  # the highest packet number delivered so far
        self.started = 0.0

    def next_spike(self, after: float) -> float:
        return after + (self.spike_draws.expovariate(self.profile.spikes) if self.profile.spikes else math.inf)

    def push(self, deliver: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        now, number = loop.time(), self.sent
        self.sent += 1
        p = self.profile
        lost, jitter, skips = self.draws.random(), self.draws.expovariate(1.0), self.draws.random()
        late, spike_length = self.draws.uniform(0.022, 0.032), self.draws.uniform(*p.spike_ms) / 1000
        if not self.started:
            self.started = now
            self.spike_at = self.next_spike(now)
        while now >= self.spike_at:  # a spike began: it holds every packet until it ends
            self.spike_end = max(self.spike_end, self.spike_at + spike_length)
            self.spike_at = self.next_spike(self.spike_at)
        if lost < p.loss:
            self.dropped += 1
            return
        at = max(now + jitter * p.jitter_ms / 1000, self.queue_until)
        if now < self.spike_end:
            at = max(at, self.spike_end)
            self.spiked += 1
        if skips < p.reorder:
            at += late  # out of the queue: the packets behind it do not wait for it
        else:
            self.queue_until = at
        self.delays.append(at - now)

        def arrive() -> None:
            if number < self.delivered_up_to:
                self.reordered += 1
            self.delivered_up_to = max(self.delivered_up_to, number)
            deliver()

        loop.call_at(at, arrive)

    def figures(self) -> dict[str, Any]:
        delays = sorted(self.delays) or [0.0]

        def ms(share: float) -> float:
            return round(1000 * delays[min(len(delays) - 1, round(share * (len(delays) - 1)))], 1)

        return {
            "profile": self.profile.name,
            "packets": self.sent,
            "dropped": self.dropped,
            "reordered": self.reordered,
            "held_by_spikes": self.spiked,
            "added_delay_p50_ms": ms(0.5),
            "added_delay_p95_ms": ms(0.95),
            "added_delay_max_ms": ms(1.0),
        }


SHAPED_SSRCS: dict[int, Shaper] = {}  # outgoing RTP by SSRC: the tracks `shape_outgoing` was asked to shape


def shape_outgoing(ssrc: int, shaper: Shaper) -> None:
    """Every RTP packet this process sends with `ssrc` (one sender's track) goes through `shaper` before SRTP and the
    socket; RTCP and other tracks pass as they are."""
    from aiortc.rtcdtlstransport import RTCDtlsTransport
    from aiortc.rtp import is_rtcp

    if not SHAPED_SSRCS:
        send = RTCDtlsTransport._send_rtp

        async def shaped(self: RTCDtlsTransport, data: bytes) -> None:
            shaper = None if is_rtcp(data) or len(data) < 12 else SHAPED_SSRCS.get(int.from_bytes(data[8:12], "big"))
            if shaper is None:
                await send(self, data)
                return

            async def out() -> None:
                with contextlib.suppress(ConnectionError):  # the peer closed meanwhile
                    await send(self, data)

            shaper.push(lambda: background(out()))

        RTCDtlsTransport._send_rtp = shaped  # type: ignore[method-assign]
    SHAPED_SSRCS[ssrc] = shaper


def shape_incoming(receiver: Any, shaper: Shaper) -> None:
    """Every RTP packet `receiver` gets (after SRTP) goes through `shaper` before whatever handled it so far."""
    handle = receiver._handle_rtp_packet

    async def shaped(packet: Any, arrival_time_ms: int) -> None:
        shaper.push(lambda: background(handle(packet, arrival_time_ms)))

    receiver._handle_rtp_packet = shaped


_TASKS: set[asyncio.Task[Any]] = set()


def background(coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
