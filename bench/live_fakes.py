"""The test fakes, made to behave like live interviews: frames flowing and lines said."""

import asyncio
import contextlib
from typing import Any

from tests.fakes import FakeEdge, FakeRealtime


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
