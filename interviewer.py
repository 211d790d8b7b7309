"""The interviewer: what an invite carries, what the agent is told, and one interview from join to stored transcript."""

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints, create_model
from vision_agents.core import Agent, User
from vision_agents.core.edge.events import CallEndedEvent
from vision_agents.core.utils.audio_filter import FirstSpeakerWinsFilter

from config import Settings
from transcripts import TranscriptStore, iso

log = logging.getLogger("interview_agent")
ROLES = {"assistant": "interviewer", "user": "candidate"}
PROMPT = (Path(__file__).parent / "interviewer_prompt.md").read_text()
# Candidate-supplied text must neither trigger the library's `@file.md` include nor close the data block.
NEUTRAL = str.maketrans({"@": "\uff20", "<": "\u2039", ">": "\u203a"})
CallId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Question = Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class Invite(BaseModel, extra="forbid"):
    call_id: CallId
    call_type: CallId = "default"
    candidate_name: Name
    job_title: Name
    questions: list[Question] = Field([], max_length=30)
    max_minutes: float | None = Field(None, gt=0)

    @classmethod
    def limited_to(cls, minutes: float) -> type["Invite"]:
        """The invite as this deployment accepts it: `max_minutes` at most MAX_INTERVIEW_MINUTES, in the schema too."""
        return create_model("Invite", __base__=cls, max_minutes=(float | None, Field(None, gt=0, le=minutes)))


@dataclass
class Interview:
    invite: Invite
    agent: Agent | None = None  # set once the launcher has built it
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def transcript(self) -> dict[str, Any]:
        """The document so far; `end_reason` and the end fields stay null until the interview is finalised."""
        assert self.agent is not None
        messages = self.agent.conversation.messages if self.agent.conversation else []
        lines = [
            {"role": ROLES[m.role], "speaker_id": m.user_id, "text": m.content, "at": iso(m.timestamp)}
            for m in messages
            if m.role in ROLES and m.content and m.timestamp
        ]
        head = {"version": 1, "interview_id": self.agent.id, "started_at": iso(self.started_at)}
        invite = self.invite.model_dump(include={"call_id", "call_type", "candidate_name", "job_title"})
        tail = dict.fromkeys(["ended_at", "duration_seconds", "end_reason", "error"])
        return head | invite | tail | {"messages": lines}


def agent_factory(settings: Settings, make_edge: Callable[[], Any], make_llm: Callable[[], Any]) -> Callable[[], Agent]:
    def create_agent() -> Agent:
        return Agent(
            edge=make_edge(),
            llm=make_llm(),
            agent_user=User(id="ai-interviewer", name=settings.agent_name),
            multi_speaker_filter=FirstSpeakerWinsFilter(model_dir=str(settings.vad_model_dir)),
        )

    return create_agent


def instructions(settings: Settings, invite: Invite, minutes: float) -> str:
    data = json.dumps(invite.model_dump(include={"candidate_name", "job_title", "questions"}), ensure_ascii=False)
    return PROMPT.format(agent=settings.agent_name, minutes=minutes, data=data.translate(NEUTRAL))


async def conduct(agent: Agent, interview: Interview, settings: Settings, store: TranscriptStore) -> None:
    """Run the interview until the call ends, the time limit, or cancellation; then store its transcript."""
    interview.agent, invite = agent, interview.invite
    call_ended = ends_with_call(agent)
    reason, error = "stopped", None
    try:
        minutes = invite.max_minutes or settings.max_interview_minutes
        agent.llm.set_instructions(instructions(settings, invite, minutes))
        call = await agent.create_call(invite.call_type, invite.call_id)
        async with agent.join(call, participant_wait_timeout=settings.idle_timeout_seconds):
            await agent.simple_response("Greet the candidate by name and begin the interview.")
            wrap_up = min(60.0, minutes * 6)
            if not await wait(call_ended, minutes * 60 - wrap_up):
                await agent.simple_response("Time is almost up: close the interview now and thank the candidate.")
                await wait(call_ended, wrap_up)
        reason = "call_ended" if call_ended.is_set() else "stopped"
    except Exception as exc:
        reason, error = "error", f"{type(exc).__name__}: {exc}"
        log.error("interview %s on call %s failed: %s", agent.id, invite.call_id, error)
    finally:
        store.save_final(interview.transcript(), reason, error)


def ends_with_call(agent: Agent) -> asyncio.Event:
    """An event set when the call ends, in place of the agent's own call-ended handler."""
    # Vision-Agents 0.6.9: Agent's CallEndedEvent handler awaits close(), which cancels that very handler
    # task, so both wait forever (agents.py on_call_ended); the closure is reachable only privately.
    for handler in list(agent.events._handlers.get(CallEndedEvent.type, {})):
        if handler.__qualname__.startswith("Agent."):
            agent.events.unsubscribe(handler)
    ended = asyncio.Event()

    async def on_call_ended(_: CallEndedEvent) -> None:
        ended.set()

    agent.events.subscribe(on_call_ended)
    return ended


async def wait(event: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        return False
    return True
