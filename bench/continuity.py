"""Continuity of audio between two processes: a pilot tone whose every 20 ms window is known, checked where it lands.

The sender (`Pilot`) sends a continuous sine in place of speech: the candidate's microphone at 425 Hz (Stream
stand-in), the model's voice at 575 Hz (OpenAI stand-in), 8.5 and 11.5 cycles per 20 ms, so that a 20 ms frame
dropped or repeated anywhere on the way turns the phase by half a cycle, and a 10 ms one by a quarter. The latency
markers (bench/marker.py) still replace 60 ms of it once a second.

The receiver (`Continuity`) takes the decoded audio in 20 ms windows on its own timeline (RTP timestamps, or the
playout clock of the browser-like buffer below) and fits each window, by least squares, with the pilot and the four
marker tones (a sine and a cosine each). A window is:

- *marker*: the marker tones hold at least 20% of its energy, or the window just before or after such a one: not
  judged (a marker replaced the pilot there; the windows beside it hold its edges, smeared by the codecs and the
  service's resampling);
- *missing*: its slot never came (a frame that the receiver never got: lost, or dropped on the way);
- *silent*: RMS below 100 (of 32767; the pilot is sent at RMS 4,243);
- *level*: the pilot's amplitude is off by more than 6 dB from the median of the last 500 good windows;
- *distorted*: what the fit leaves over holds more than 10% of the energy (a splice inside the window, a concealment
  that does not continue the tone, noise);
- *spliced*: the pilot's phase is more than 0.5 rad (29 degrees) away from where the last good window's phase
  predicts it (a frame dropped, repeated or shifted at the window's edge);
- *good* otherwise.

Broken = missing, silent, level, distorted or spliced; the share is over every judged window (markers left out);
the longest dropout is the longest run of broken windows in a row (markers in between neither break nor extend it),
in ms. Each window is stamped with the wall-clock time it was decoded (or played), so a run's figures can be cut to a
time window.

`Playout` is the candidate's browser's receive buffer, in the Stream stand-in: like WebRTC's NetEq it plays a 20 ms
frame every 20 ms from the packets it holds, conceals a missing one with Opus's own packet-loss concealment (libopus
`opus_decode` with no data, the same call NetEq makes), skips a packet that is missing when later ones are already
there (lost, or so late that the call moved on), and when nothing newer has arrived it conceals without moving on, so
its delay grows by that frame (NetEq's expand); it starts 40 ms after the first packet and never shrinks its delay
(NetEq would, slowly: this one is kinder to the sender). Packets arriving after their slot was played are dropped.
"""

import asyncio
import ctypes
import ctypes.util
import math
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from bench.marker import CODES

RATE, FRAME = 48000, 960
PILOTS = {"candidate": 425.0, "interviewer": 575.0}  # Hz
AMPLITUDE = 6000
MARKER_SHARE, SILENT_RMS, LEVEL_DB, RESIDUE_SHARE, PHASE_RAD = 0.2, 100.0, 6.0, 0.1, 0.5
BROKEN = ("missing", "silent", "level", "distorted", "spliced")
START_DELAY = 0.04  # seconds: the browser buffer's first playout after the first packet


class Pilot:
    """The pilot tone, continuous in its own sample count whatever the pacing of the frames it fills."""

    def __init__(self, frequency: float) -> None:
        self.frequency, self.count = frequency, 0

    def next(self, samples: int = FRAME) -> np.ndarray:
        n = self.count + np.arange(samples)
        self.count += samples
        return (AMPLITUDE * np.sin(2 * np.pi * self.frequency * n / RATE)).astype(np.int16)


def _basis(frequency: float) -> np.ndarray:
    n = np.arange(FRAME) / RATE
    columns = [f(2 * np.pi * hz * n) for hz in (frequency, *CODES) for f in (np.cos, np.sin)]
    return np.stack(columns, axis=1)


class Continuity:
    """Judges each 20 ms window of one received track against the pilot; `figures(start, end)` over a time window."""

    def __init__(self, frequency: float) -> None:
        self.frequency = frequency
        self.basis = _basis(frequency)
        self.solve = np.linalg.pinv(self.basis)
        self.windows: deque[tuple[float, str]] = deque(maxlen=50 * 900)  # (time.time(), state), the last 15 min
        self.last_slot: int | None = None
        self.reference: tuple[float, int] | None = None  # the last good window's phase and slot
        self.amplitudes: deque[float] = deque(maxlen=500)
        self.after_marker = False

    def feed(self, samples: np.ndarray, slot: int, at: float) -> str:
        """`samples`: one 20 ms window of mono 48 kHz audio; `slot`: its place on the receiver's timeline (20 ms
        units); `at`: when it was decoded or played."""
        if self.last_slot is not None:
            if slot <= self.last_slot:
                return "repeated"
            for _ in range(min(slot - self.last_slot - 1, 500)):
                self.windows.append((at, "missing"))
        self.last_slot = slot
        state = self.judge(samples.astype(np.float64)[:FRAME], slot)
        if state == "marker":  # the window on each side of a marker holds its edge: not judged either
            if self.windows and self.windows[-1][1] in BROKEN and self.windows[-1][1] != "missing":
                self.windows[-1] = (self.windows[-1][0], "marker")
            self.after_marker = True
        elif self.after_marker:
            state, self.after_marker = ("marker" if state != "missing" else state), False
        self.windows.append((at, state))
        return state

    def judge(self, x: np.ndarray, slot: int) -> str:
        if len(x) < FRAME:
            return "missing"
        energy = float(x @ x)
        if math.sqrt(energy / FRAME) < SILENT_RMS:
            return "silent"
        coefficients = self.solve @ x
        fitted = self.basis @ coefficients
        markers = self.basis[:, 2:] @ coefficients[2:]
        if float(markers @ markers) >= MARKER_SHARE * energy:
            return "marker"
        residue = x - fitted
        cosine, sine = coefficients[0], coefficients[1]
        amplitude, phase = math.hypot(cosine, sine), math.atan2(-sine, cosine)
        if len(self.amplitudes) >= 25:
            reference = float(np.median(self.amplitudes))
            if abs(20 * math.log10(max(amplitude, 1e-9) / reference)) > LEVEL_DB:
                return "level"
        if float(residue @ residue) > RESIDUE_SHARE * energy:
            return "distorted"
        state = "good"
        if self.reference is not None:
            then, where = self.reference
            predicted = then + 2 * np.pi * self.frequency * (slot - where) * FRAME / RATE
            if abs((phase - predicted + np.pi) % (2 * np.pi) - np.pi) > PHASE_RAD:
                state = "spliced"
        self.reference = (phase, slot)
        if state == "good":
            self.amplitudes.append(amplitude)
        return state

    def figures(self, start: float = 0.0, end: float = math.inf) -> dict[str, Any]:
        states = [state for at, state in list(self.windows) if start <= at < end and state != "marker"]
        broken = [state in BROKEN for state in states]
        run = longest = 0
        for bad in broken:
            run = run + 1 if bad else 0
            longest = max(longest, run)
        counts = {kind: states.count(kind) for kind in BROKEN}
        when = [[round(at, 3), state] for at, state in list(self.windows) if start <= at < end and state in BROKEN]
        figures = {"windows": len(states), "broken": sum(broken), "longest_dropout_ms": longest * 20} | counts
        return figures | {"broken_at": when[:500]}


def combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Several tracks' `figures` as one: summed, the longest dropout the longest of them; and the broken share."""
    total: dict[str, Any] = {"windows": 0, "broken": 0, "longest_dropout_ms": 0} | dict.fromkeys(BROKEN, 0)
    for part in parts:
        for key in list(total):
            total[key] = max(total[key], part[key]) if key == "longest_dropout_ms" else total[key] + part[key]
    total["broken_share"] = total["broken"] / total["windows"] if total["windows"] else None
    total["broken_at"] = sorted(when for part in parts for when in part.get("broken_at", []))
    return total


def _libopus() -> Any:
    bundled = sorted((Path(av.__file__).resolve().parent.parent / "av.libs").glob("libopus*.so*"))
    lib = ctypes.CDLL(str(bundled[0]) if bundled else ctypes.util.find_library("opus") or "libopus.so.0")
    lib.opus_decoder_create.restype = ctypes.c_void_p
    lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.opus_decode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32, ctypes.c_void_p]
    lib.opus_decode.argtypes += [ctypes.c_int, ctypes.c_int]
    lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
    return lib


class OpusDecoder:
    """libopus itself (the copy PyAV ships), mono 48 kHz: `decode(None)` is its packet-loss concealment."""

    lib: Any = None

    def __init__(self) -> None:
        if OpusDecoder.lib is None:
            OpusDecoder.lib = _libopus()
        error = ctypes.c_int()
        self.state = self.lib.opus_decoder_create(RATE, 1, ctypes.byref(error))
        assert error.value == 0, error.value
        self.out = np.zeros(FRAME * 6, dtype=np.int16)  # up to 120 ms per packet

    def decode(self, payload: bytes | None) -> np.ndarray:
        pointer = self.out.ctypes.data_as(ctypes.c_void_p)
        count = self.lib.opus_decode(self.state, payload, len(payload) if payload else 0, pointer, FRAME, 0)
        return self.out[: max(count, 0)].copy() if count > 0 else np.zeros(FRAME, dtype=np.int16)

    def __del__(self) -> None:
        if self.state and self.lib:
            self.lib.opus_decoder_destroy(self.state)


class Playout:
    """The candidate's browser's receive buffer (see the module's docstring). `add` takes the RTP packets (it
    replaces aiortc's receive path for the track: `receiver._handle_rtp_packet`); every 20 ms a frame goes to
    `play(frame)` (an `av.AudioFrame`, mono, pts = its RTP timestamp since the first packet) and to `continuity`."""

    def __init__(self, play: Callable[[av.AudioFrame], None], continuity: Continuity | None, clock: Any) -> None:
        self.play, self.continuity, self.clock = play, continuity, clock
        self.decoder = OpusDecoder()
        self.packets: dict[int, bytes] = {}  # RTP timestamp (unwrapped, from the first) -> Opus payload
        self.first: int | None = None
        self.next = 0  # the timestamp to play next, from the first
        self.newest = 0
        self.task: asyncio.Task[None] | None = None
        self.played = self.concealed = self.expanded = self.skipped = self.late = 0

    async def add(self, packet: Any, arrival_time_ms: int = 0) -> None:
        if self.first is None:
            self.first = packet.timestamp
            self.task = asyncio.ensure_future(self.run())
        at = (packet.timestamp - self.first) % (1 << 32)
        if at >= 1 << 31 or at < self.next:
            self.late += 1  # its slot was played already
            return
        self.packets[at] = bytes(packet.payload)
        self.newest = max(self.newest, at)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(START_DELAY)
        begin, tick = loop.time(), 0
        try:
            while True:
                payload = self.packets.pop(self.next, None)
                pts = self.next
                if payload is not None:
                    samples = self.decoder.decode(payload)
                    self.next += FRAME
                    self.played += 1
                else:
                    samples = self.decoder.decode(None)
                    self.concealed += 1
                    if self.newest > self.next:  # later packets are here: this one is lost, or too late
                        self.next += FRAME
                        self.skipped += 1
                    else:  # nothing newer yet: conceal and wait for it (the delay grows by a frame)
                        self.expanded += 1
                frame = av.AudioFrame.from_ndarray(samples[:FRAME].reshape(1, -1), format="s16", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = RATE, pts, Fraction(1, RATE)
                if self.continuity is not None:
                    self.continuity.feed(samples, tick, self.clock())
                self.play(frame)
                tick += 1
                await asyncio.sleep(max(0.0, begin + tick * FRAME / RATE - loop.time()))
        except asyncio.CancelledError:
            pass

    def stop(self) -> None:
        if self.task:
            self.task.cancel()

    def figures(self) -> dict[str, int]:
        return {
            "played": self.played,
            "concealed": self.concealed,
            "expanded": self.expanded,
            "skipped": self.skipped,
            "late_dropped": self.late,
            "delay_ms": round(self.expanded * 20 + START_DELAY * 1000),  # its playout delay now
        }
