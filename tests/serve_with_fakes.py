"""`uv run main.py` as it is, with Stream's edge and OpenAI Realtime replaced by the fakes: a real service process.

The interviewer greets, then says one scripted line and hears one scripted answer, so the transcript has both. A call
whose id is `ends-in-N` is ended N seconds after the greeting, as if the candidate's side ended it.
"""

import asyncio
from typing import Any

import interview
import main
from tests.fakes import CANDIDATE, FakeEdge, FakeRealtime

INTERVIEWER_LINE = "Welcome Grace Hopper, tell me about compilers."
CANDIDATE_LINE = "I wrote the first one, in 1952."


class ScriptedRealtime(FakeRealtime):
    def __init__(self, **_: Any) -> None:  # takes the service's client and options, as the Interviewer does
        super().__init__()

    async def simple_response(self, text: str, participant: Any = None):  # type: ignore[override]
        async for event in super().simple_response(text, participant):
            yield event
        if len(self.prompts) == 1:
            self.say(INTERVIEWER_LINE)
            self._current_participant = CANDIDATE  # as the audio frames of the candidate would have set it
            self.transcribe_candidate(CANDIDATE_LINE)
            edge = self.agent.edge  # type: ignore[union-attr]
            if edge.call.id.startswith("ends-in-"):
                asyncio.get_running_loop().call_later(float(edge.call.id.rsplit("-", 1)[1]), edge.end_call)


if __name__ == "__main__":
    interview.AudioOnlyEdge = FakeEdge  # type: ignore[misc]
    interview.Interviewer = ScriptedRealtime  # type: ignore[misc]
    main.main()
