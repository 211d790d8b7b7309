"""A latency marker between two processes on one machine: a tone burst whose onset is at a whole second.

The sender (`MarkerSource`) replaces 60 ms of its 48 kHz audio, once per second, with a tone whose onset sample is at
the whole second S of `time.time()` (the system-wide clock, the same in every process) and whose pitch says which
second it is (`CODES[S % 4]`: 800, 1000, 1200 or 1400 Hz). The receiver (`MarkerDetector`) notes when each RTP packet
arrives (after SRTP, before its own jitter buffer and decoder: what the network hands over), finds the burst's onset
in the decoded audio and places it in time by the arrival of the packet that carried it; the latency of that marker
is that moment minus S. Nothing crosses between the processes but the audio itself, so each receiver computes its
latencies alone, and up to 4 s of latency is told apart.

What it measures is everything between the two stand-ins: the server's jitter buffer, decoding, resampling, its paced
outgoing track and encoder, and both Opus codecs' own delay (about 6.5 ms each).
"""

import math
from collections import deque
from typing import Any

import numpy as np

RATE = 48000
CODES = (800.0, 1000.0, 1200.0, 1400.0)  # Hz; whole numbers of cycles in a 5 ms window, so orthogonal in it
BURST = round(0.06 * RATE)  # samples of tone per marker
AMPLITUDE = 12000
WINDOW, HOP = 240, 48  # 5 ms windows, 1 ms apart
TONE_SHARE, LOUD_RMS = 0.5, 1000.0  # a window is the tone if one code holds half its energy and it is not quiet
CONFIRM = 15  # windows in a row (15 ms) before an onset counts
REARM = 200  # windows (200 ms) without the tone before the next onset can count
SLACK = 0.002  # seconds: a whole second this close before a frame's start still gets its marker, at the frame's start
_N = np.arange(WINDOW)
BASIS = np.exp(-2j * np.pi * np.outer(CODES, _N) / RATE)  # (codes, window)


class MarkerSource:
    """Stamps the markers into a paced 48 kHz mono int16 track, frame by frame."""

    def __init__(self) -> None:
        self.last_second = 0
        self.remaining = 0  # samples of the current burst still to write
        self.written = 0
        self.code = CODES[0]
        self.sent = 0

    def stamp(self, samples: np.ndarray, at: float) -> np.ndarray:
        """`samples` is the frame whose first sample goes out at `at` (time.time(), when the track hands it over)."""
        start = 0
        if not self.remaining:
            second = math.ceil(at - SLACK)
            if second > self.last_second and second < at + len(samples) / RATE:
                start = max(0, round((second - at) * RATE))
                self.last_second, self.remaining, self.written = second, BURST, 0
                self.code, self.sent = CODES[second % len(CODES)], self.sent + 1
        if not self.remaining:
            return samples
        count = min(self.remaining, len(samples) - start)
        t = (self.written + np.arange(count)) / RATE
        out = samples.copy()
        out[start : start + count] = (AMPLITUDE * np.sin(2 * np.pi * self.code * t)).astype(np.int16)
        self.written += count
        self.remaining -= count
        return out


class MarkerDetector:
    """Finds the markers in the audio one receiver decodes; `latencies` holds (S, seconds) for each marker found."""

    def __init__(self) -> None:
        self.arrivals: dict[int, float] = {}  # RTP timestamp -> time.time() of its packet's arrival
        self.order: deque[int] = deque()
        self.origin: int | None = None  # the first RTP timestamp: aiortc's decoded frames count pts from it
        self.tail = np.zeros(0, dtype=np.float64)
        self.tail_at = 0.0  # when tail[0] arrived
        self.run_code, self.run_length, self.run_at, self.quiet = -1, 0, 0.0, REARM
        self.latencies: list[tuple[int, float]] = []
        self.unplaced = 0  # frames whose packet's arrival was not found (then timed by their decoding)

    def arrived(self, timestamp: int, at: float) -> None:
        if self.origin is None:
            self.origin = timestamp
        if timestamp not in self.arrivals:
            self.arrivals[timestamp] = at
            self.order.append(timestamp)
            if len(self.order) > 1000:  # 20 s of packets
                self.arrivals.pop(self.order.popleft(), None)

    def feed(self, frame: Any, now: float) -> None:
        """A decoded frame (aiortc: 48 kHz, s16, pts in samples since the first packet), `now` when it was decoded."""
        samples = frame.to_ndarray()
        channels = len(frame.layout.channels)
        mono = samples[0] if frame.format.is_planar else samples[0, ::channels]
        at = None
        if self.origin is not None and frame.pts is not None:
            at = self.arrivals.get((self.origin + frame.pts) % (1 << 32))
        if at is None:
            self.unplaced += 1
            at = now
        self.scan(mono.astype(np.float64), at)

    def scan(self, mono: np.ndarray, at: float) -> None:
        buffer = np.concatenate([self.tail, mono])
        count = (len(buffer) - WINDOW) // HOP + 1
        if count <= 0:
            self.tail, self.tail_at = buffer, (self.tail_at if len(self.tail) else at)
            return
        windows = np.lib.stride_tricks.sliding_window_view(buffer, WINDOW)[::HOP][:count]
        energy = np.einsum("ij,ij->i", windows, windows)
        power = np.abs(windows @ BASIS.T) ** 2  # (windows, codes)
        share = 2 * power / (WINDOW * np.maximum(energy, 1e-9))[:, None]
        best = share.argmax(axis=1)
        toned = (share[np.arange(count), best] >= TONE_SHARE) & (energy >= WINDOW * LOUD_RMS**2)
        offset = len(self.tail)
        for index in range(count):
            position = index * HOP
            when = self.tail_at + position / RATE if position < offset else at + (position - offset) / RATE
            if not toned[index]:
                self.run_length, self.quiet = 0, self.quiet + 1
                continue
            if self.run_length and best[index] == self.run_code:
                self.run_length += 1
            else:
                self.run_code, self.run_length, self.run_at = int(best[index]), 1, when
            if self.run_length == CONFIRM and self.quiet >= REARM:
                onset = self.run_at + WINDOW / 2 / RATE  # the first window half full of tone
                second = math.floor(onset + 0.01)
                second -= (second - self.run_code) % len(CODES)
                self.latencies.append((second, onset - second))
                self.quiet = 0
            if self.run_length >= CONFIRM:
                self.quiet = 0
        rest = count * HOP
        self.tail = buffer[rest:]
        self.tail_at = self.tail_at + rest / RATE if rest < offset else at + (rest - offset) / RATE


def hook_receiver(receiver: Any, detector: MarkerDetector, clock: Any) -> None:
    """Notes each RTP packet's arrival for `detector` (aiortc's router calls `_handle_rtp_packet` per packet)."""
    handle = receiver._handle_rtp_packet

    async def noted(packet: Any, arrival_time_ms: int) -> None:
        detector.arrived(packet.timestamp, clock())
        await handle(packet, arrival_time_ms)

    receiver._handle_rtp_packet = noted


def figures(detector: MarkerDetector | None, source: MarkerSource | None) -> dict[str, Any]:
    """What a stand-in's `GET /stats` says of the markers on one track pair: (S, latency in ms) of each found."""
    found = [[second, round(latency * 1000, 2)] for second, latency in (detector.latencies if detector else [])]
    return {"markers_sent": source.sent if source else 0, "marker_latencies": found}
