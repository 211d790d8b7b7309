"""One interview: what an invite carries, what the interviewer is told, and its transcript from the call to storage."""

import asyncio
import contextlib
import json
import logging
import threading
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from getstream.video.rtc.pb.stream.video.sfu.models.models_pb2 import TrackType
from getstream.video.rtc.signaling import WebSocketClient
from getstream.video.rtc.tracks import TrackSubscriptionConfig
from google.api_core.exceptions import PreconditionFailed
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY
from pydantic import BaseModel, Field, StringConstraints
from vision_agents.core import Agent
from vision_agents.core.agents.conversation import Message
from vision_agents.core.edge.events import CallEndedEvent
from vision_agents.core.utils.audio_filter import AudioFilter
from vision_agents.plugins import getstream, openai

from config import Settings

log = logging.getLogger("interview_agent")
PROMPT = (Path(__file__).parent / "interviewer_prompt.md").read_text()
# Candidate-supplied text must neither trigger the library's `@file.md` include nor close the data block.
NEUTRAL = str.maketrans({"@": "\uff20", "<": "\u2039", ">": "\u203a"})
ROLES = {"assistant": "interviewer", "user": "candidate"}
CALL_ID, USER_ID = r"^[A-Za-z0-9_-]{1,64}$", r"^[A-Za-z0-9_@.-]{1,128}$"
UPLOAD_RETRY = DEFAULT_RETRY.with_timeout(20)  # GCS's own retry policy, bounded so that shutdown stays short


class Invite(BaseModel, extra="forbid"):
    call_id: str = Field(pattern=CALL_ID)
    call_type: str = Field("default", pattern=CALL_ID)
    candidate_user_id: str = Field(pattern=USER_ID)
    candidate_name: str = Field(min_length=1, max_length=200)
    job_title: str = Field(min_length=1, max_length=200)
    questions: list[Annotated[str, StringConstraints(min_length=1, max_length=1000)]] = Field([], max_length=30)


# Set by POST /interviews just before AgentLauncher.start_session, whose session task starts with a copy of it.
INVITE: ContextVar[Invite] = ContextVar("invite")

# getstream 4.3: WebSocketClient.close() joins two threads for up to 2 s each on the event loop, freezing every other
# interview's audio at each leave (signaling.py, close); the same close in a thread of its own blocks nobody.
blocking_close = WebSocketClient.close
WebSocketClient.close = lambda self: threading.Thread(target=blocking_close, args=(self,), daemon=True).start()  # type: ignore[method-assign]


class AudioOnlyEdge(getstream.Edge):
    def _get_subscription_config(self) -> TrackSubscriptionConfig:  # the edge's only hook: no video sent or decoded
        return TrackSubscriptionConfig(track_types=[TrackType.TRACK_TYPE_AUDIO])


class Interviewer(openai.Realtime, AudioFilter):
    """One interview's OpenAI Realtime session, and the Agent's multi-speaker filter too: whether alone on the call
    or not, it hears the Stream user `candidate` alone, and sets `heard` once it has."""

    candidate: str
    heard: asyncio.Event

    async def process_audio(self, pcm: Any, participant: Any) -> None:  # as a filter: None, all it needed is sent
        if participant.user_id == self.candidate:
            self.heard.set()
            await super().process_audio(pcm, participant)

    def clear(self, participant: Any = None) -> None:
        """Nothing to clear: no speaker holds a lock."""

    async def watch_video_track(self, *args: Any, **kwargs: Any) -> None:
        """Never: the plugin would renegotiate, a second OpenAI session that carries the candidate's camera."""

    async def _handle_openai_event(self, event: dict[str, Any]) -> None:
        # The plugin logs an error event's message and raises a failed response, text and all, in a task nobody awaits.
        if event.get("type") != "error" and event.get("response", {}).get("status") != "failed":
            return await super()._handle_openai_event(event)
        log.warning("interview %s: OpenAI sent a failed %s", self.agent.id, event["type"])  # type: ignore[union-attr]


class Interviews:
    """This process's interviews: each conducted, its transcript a file in TRANSCRIPT_DIR until GCS (if set) has it."""

    def __init__(self, settings: Settings) -> None:
        self.settings, self.directory = settings, settings.transcript_dir
        self.bucket = storage.Client().bucket(settings.gcs_bucket) if settings.gcs_bucket else None

    async def conduct(self, agent: Agent, call_type: str, call_id: str) -> None:
        """The invited interview until it ends, whatever ends it; its transcript is kept, always."""
        invite, started_at, ended, llm = INVITE.get(), datetime.now(UTC), call_ended(agent), agent.llm
        reason, error = "stopped", None
        try:
            data = invite.model_dump_json(include={"candidate_name", "job_title", "questions"}).translate(NEUTRAL)
            llm.set_instructions(PROMPT.format(settings=self.settings, data=data))
            llm.candidate, llm.heard = invite.candidate_user_id, asyncio.Event()
            call = await agent.create_call(call_type, call_id)
            async with agent.join(call, participant_wait_timeout=0):
                pc = llm.rtc.pc  # the plugin only logs a lost connection (rtc_manager.py: "Reconnection ... not easy")
                pc.on("connectionstatechange", lambda: pc.connectionState in ("failed", "closed") and ended.set())
                # Cancelled by the launcher (idle, time limit, close request, shutdown): `stopped`, last words kept.
                with contextlib.suppress(asyncio.CancelledError):
                    await llm.heard.wait()  # a candidate who never joins: the launcher's idle check ends it
                    await agent.simple_response("Greet the candidate by name and begin the interview.")
                    await ended.wait()
                    reason = "call_ended"
                if pc.connectionState in ("failed", "closed"):
                    raise ConnectionError("the OpenAI connection was lost")
                await llm.rtc._send_event({"type": "input_audio_buffer.commit"})  # the plugin has no public commit
                await asyncio.sleep(2)  # for the candidate's last words: OpenAI transcribes a turn after it ends
        except Exception as exc:
            reason, error = "error", f"{type(exc).__name__}: {exc}"
            log.error("interview %s on call %s failed: %s", agent.id, call_id, error)
        finally:
            ended_at, said = datetime.now(UTC), agent.conversation.messages if agent.conversation else []
            doc = {"version": 2, "interview_id": agent.id} | invite.model_dump(exclude={"questions"})
            doc |= {"started_at": iso(started_at), "ended_at": iso(ended_at), "end_reason": reason, "error": error}
            doc["messages"] = [line(m) for m in said if m.role in ROLES and m.content]
            path = self.save(f"{call_type}/{call_id}/{agent.id}.json", doc)  # on the loop: nothing can skip it
            if self.bucket:
                await asyncio.to_thread(self.upload, path)

    def save(self, name: str, doc: dict[str, Any]) -> Path:
        """Atomically, so that a crash never leaves half a transcript."""
        temporary = self.directory / f"{name}.tmp"
        temporary.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(doc, ensure_ascii=False, indent=1))
        return temporary.replace(self.directory / name)

    def upload_leftovers(self) -> None:
        """What an earlier run or a failed upload left on disk goes to GCS, at start-up."""
        for path in sorted(self.directory.rglob("*.json")) if self.bucket else []:
            self.upload(path)

    def upload(self, path: Path) -> None:
        """Blocking, with the client's own retries; the local copy goes only once GCS has the transcript."""
        name = "transcripts/" + path.relative_to(self.directory).as_posix()
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
