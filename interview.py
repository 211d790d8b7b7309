"""One interview: what an invite carries, what the interviewer is told, and its transcript from the call to storage."""

import asyncio
import contextlib
import json
import logging
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from google.api_core.exceptions import PreconditionFailed
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY
from pydantic import BaseModel, Field, StringConstraints
from vision_agents.core import Agent
from vision_agents.core.agents.conversation import Message
from vision_agents.core.edge.events import CallEndedEvent

from config import Settings

log = logging.getLogger("interview_agent")
PROMPT = (Path(__file__).parent / "interviewer_prompt.md").read_text()
# Candidate-supplied text must neither trigger the library's `@file.md` include nor close the data block.
NEUTRAL = str.maketrans({"@": "\uff20", "<": "\u2039", ">": "\u203a"})
ROLES = {"assistant": "interviewer", "user": "candidate"}
CALL_ID = r"^[A-Za-z0-9_-]{1,64}$"
UPLOAD_RETRY = DEFAULT_RETRY.with_timeout(20)  # GCS's own retry policy, bounded so that shutdown stays short


class Invite(BaseModel, extra="forbid"):
    call_id: str = Field(pattern=CALL_ID)
    call_type: str = Field("default", pattern=CALL_ID)
    candidate_name: str = Field(min_length=1, max_length=200)
    job_title: str = Field(min_length=1, max_length=200)
    questions: list[Annotated[str, StringConstraints(min_length=1, max_length=1000)]] = Field([], max_length=30)


# Set by POST /interviews just before AgentLauncher.start_session, whose session task starts with a copy of it.
INVITE: ContextVar[Invite] = ContextVar("invite")


class Interviews:
    """This process's interviews: each conducted, its transcript a file in TRANSCRIPT_DIR until GCS (if set) has it."""

    def __init__(self, settings: Settings) -> None:
        self.settings, self.directory = settings, settings.transcript_dir
        self.bucket = storage.Client().bucket(settings.gcs_bucket) if settings.gcs_bucket else None

    async def conduct(self, agent: Agent, call_type: str, call_id: str) -> None:
        """The invited interview until the call ends, the time limit or cancellation; its transcript is kept, always."""
        invite, started_at, ended = INVITE.get(), datetime.now(UTC), call_ended(agent)
        reason, error = "stopped", None  # cancelled by the launcher: idle, time limit, close request or shutdown
        try:
            data = invite.model_dump_json(exclude={"call_id", "call_type"}).translate(NEUTRAL)
            agent.llm.set_instructions(PROMPT.format(settings=self.settings, data=data))
            call = await agent.create_call(call_type, call_id)
            async with agent.join(call, participant_wait_timeout=self.settings.idle_timeout_seconds):
                await agent.simple_response("Greet the candidate by name and begin the interview.")
                limit = self.settings.max_interview_minutes * 60
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ended.wait(), limit - min(60, limit / 10))
                if not ended.is_set():
                    await agent.simple_response("Time is almost up: close the interview now and thank the candidate.")
                    await ended.wait()  # the launcher ends the session at the limit
            reason = "call_ended"
        except Exception as exc:
            reason, error = "error", f"{type(exc).__name__}: {exc}"
            log.error("interview %s on call %s failed: %s", agent.id, call_id, error)
        finally:
            ended_at, said = datetime.now(UTC), agent.conversation.messages if agent.conversation else []
            doc = {"version": 1, "interview_id": agent.id} | invite.model_dump(exclude={"questions"})
            doc |= {"started_at": iso(started_at), "ended_at": iso(ended_at), "end_reason": reason, "error": error}
            doc["duration_seconds"] = round((ended_at - started_at).total_seconds(), 3)
            doc["messages"] = [line(m) for m in said if m.role in ROLES and m.content]
            path = self.save(f"{call_type}/{call_id}/{agent.id}.json", doc)  # on the loop: nothing can skip it
            if self.bucket:
                await asyncio.to_thread(self.upload, path)

    def uri(self, name: str) -> str:
        local = (self.directory / name).resolve().as_uri()
        return f"gs://{self.bucket.name}/{self.settings.gcs_prefix}{name}" if self.bucket else local

    def save(self, name: str, doc: dict[str, Any]) -> Path:
        """Atomically, so that a crash never leaves half a transcript."""
        temporary = self.directory / f"{name}.tmp"
        temporary.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(doc, ensure_ascii=False, indent=1))
        return temporary.replace(self.directory / name)

    def upload_leftovers(self) -> None:
        """What an earlier run or a failed upload left on disk goes to GCS: at start-up, then every minute."""
        while self.bucket:
            for path in sorted(self.directory.rglob("*.json")):
                self.upload(path)
            time.sleep(60)

    def upload(self, path: Path) -> None:
        """Blocking, with the client's own retries; the local copy goes only once GCS has the transcript."""
        name = self.settings.gcs_prefix + path.relative_to(self.directory).as_posix()
        try:  # never overwrites: a 412 means an earlier or concurrent attempt already stored this very transcript
            with contextlib.suppress(PreconditionFailed, FileNotFoundError):
                self.bucket.blob(name).upload_from_filename(path, if_generation_match=0, retry=UPLOAD_RETRY, timeout=10)  # type: ignore[union-attr]
            path.unlink(missing_ok=True)
        except Exception as exc:
            log.error("interview %s: GCS upload failed, its transcript waits on disk: %r", path.stem, exc)


def line(m: Message) -> dict[str, Any]:
    return {"role": ROLES[m.role], "speaker_id": m.user_id, "text": m.content, "at": iso(m.timestamp)}


def call_ended(agent: Agent) -> asyncio.Event:
    """Set when the call ends, in place of the agent's own call-ended handler."""
    # Vision-Agents 0.6.9: Agent's CallEndedEvent handler awaits close(), which cancels that very handler task,
    # so both wait forever (agents.py on_call_ended); the closure is reachable only through the private map.
    for handler in list(agent.events._handlers.get(CallEndedEvent.type, {})):
        if handler.__qualname__.startswith("Agent."):
            agent.events.unsubscribe(handler)
    ended = asyncio.Event()

    async def on_call_ended(_: CallEndedEvent) -> None:
        ended.set()

    agent.events.subscribe(on_call_ended)
    return ended


def iso(moment: datetime | None) -> str:
    return (moment or datetime.now()).astimezone(UTC).isoformat()
