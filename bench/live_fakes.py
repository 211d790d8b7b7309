"""The test fakes, made to behave like live interviews: frames flowing and lines said, with or without real audio."""

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from getstream.video.rtc import PcmData
from vision_agents.core.edge.events import AudioReceivedEvent

from bench.speech import RATE, speech_frame
from tests.fakes import CANDIDATE, FakeEdge, FakeRealtime


class StreamingEdge(FakeEdge):
    async def join(self, agent: Any, call: Any, **kwargs: Any) -> Any:
        connection = await super().join(agent, call, **kwargs)
        self.streaming = asyncio.create_task(self.stream())
        return connection

    async def stream(self) -> None:
        while not self.connection.closed:
            self.candidate_speaks(frames=1)
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        self.connection.closed = True
        await super().close()


class ChattyRealtime(FakeRealtime):
    async def connect(self) -> None:
        await super().connect()
        self.chatter = asyncio.create_task(self.chat())

    async def chat(self) -> None:
        line = 0
        while not self.closed:
            await asyncio.sleep(2)
            line += 1
            self.say(f"Interviewer line {line}: tell me more about that project and its constraints.")
            with contextlib.suppress(Exception):
                self.transcribe_candidate(f"Candidate line {line}: it was a distributed ledger with strict latency.")


@dataclass
class AudioTiming:
    """The interviewer's outgoing audio as a publisher takes it: one 20 ms frame per slot, counted across calls."""

    frames_out: int = 0
    voiced_frames_out: int = 0  # of the one frame in ten that is inspected (np.any on every frame costs 2% of a core)
    late_frames_out: int = 0  # taken more than one slot (20 ms) after it was due
    worst_lateness_ms: float = 0.0
    frames_in: int = 0  # candidate frames delivered to the agent


AUDIO = AudioTiming()


class SpeakingEdge(FakeEdge):
    """Stream's side of a live call: the candidate speaks (real speech, looped, in real time) and the interviewer's
    voice is taken frame by frame, as the SFU publisher would."""

    async def publish_tracks(self, audio_track: Any, video_track: Any) -> None:
        if audio_track is not None:
            self.publishing = asyncio.create_task(self.publish(audio_track))

    async def candidate_microphone(self) -> None:
        """Started by FakeEdge.join, for the whole call."""
        loop = asyncio.get_running_loop()
        start, index = loop.time(), 0
        while not self.connection.closed:
            pcm = PcmData(sample_rate=RATE, format="s16", samples=speech_frame(index), channels=1)
            self.events.send(AudioReceivedEvent(pcm_data=pcm, participant=CANDIDATE))
            AUDIO.frames_in += 1
            index += 1
            await asyncio.sleep(max(0.0, start + index * 0.02 - loop.time()))

    async def publish(self, track: Any) -> None:
        first: float | None = None
        while not self.connection.closed:
            try:
                frame = await track.recv()
            except Exception:  # the track stopped with the agent
                return
            now = time.monotonic()
            first = now if first is None else first
            lateness = now - (first + frame.pts / RATE)
            AUDIO.frames_out += 1
            if AUDIO.frames_out % 10 == 0:
                AUDIO.voiced_frames_out += bool(np.any(frame.to_ndarray()))
            AUDIO.late_frames_out += lateness > 0.02
            AUDIO.worst_lateness_ms = max(AUDIO.worst_lateness_ms, lateness * 1000)
