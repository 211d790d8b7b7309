"""One interview: what an invite carries, what the interviewer is told, and its transcript from the call to storage."""

import asyncio
import contextlib
import copy
import functools
import logging
import threading
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
from aiortc import jitterbuffer, rtcrtpreceiver
from getstream.video.rtc import signaling, tracks
from google.cloud import exceptions, storage
from openai import AsyncOpenAI
from openai.types.realtime import ConversationItemCreateEvent, RealtimeSessionCreateRequestParam
from pydantic import BaseModel, Field, StringConstraints, TypeAdapter
from vision_agents.core import Agent, AgentLauncher, RedisSessionKVStore, SessionRegistry, User, edge
from vision_agents.plugins import getstream, openai

from config import Settings

log = logging.getLogger("interview_agent")
HERE = Path(__file__).parent
PROMPT = (HERE / "interviewer_prompt.md").read_text()
# Candidate-supplied text must neither trigger the library's `@file.md` include nor close the data block.
NEUTRAL = str.maketrans({"@": "\uff20", "<": "\u2039", ">": "\u203a"})
UPLOAD_RETRY = storage.retry.DEFAULT_RETRY.with_timeout(20)  # GCS's own retry policy, bounded: shutdown stays short


# The interviewer's OpenAI Realtime session, checked against OpenAI's types at start-up: a bad file stops the service.
SESSION = TypeAdapter(RealtimeSessionCreateRequestParam).validate_json((HERE / "interviewer_session.json").read_bytes())
# What the interviewer is told WRAP_UP_SECONDS before the limit, checked as OpenAI's event: a system message, no reply.
WRAP_UP = ConversationItemCreateEvent.model_validate_json((HERE / "interviewer_wrap_up.json").read_bytes())


class Invite(BaseModel, extra="forbid"):
    call_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    call_type: str = Field("default", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    candidate_user_id: str = Field(pattern=r"^[A-Za-z0-9_@.-]{1,128}$")
    candidate_name: str = Field(min_length=1, max_length=200)
    job_title: str = Field(min_length=1, max_length=200)
    questions: list[Annotated[str, StringConstraints(min_length=1, max_length=1000)]] = Field([], max_length=30)
    language: str = Field("en", pattern=r"^[a-z]{2}$")  # ISO 639-1: the interview's, and its transcription's


# Set by POST /interviews just before AgentLauncher.start_session, whose session task starts with a copy of it.
INVITE: ContextVar[Invite] = ContextVar("invite")

# getstream 4.3: WebSocketClient.close() joins two threads for up to 2 s each on the event loop, freezing every other
# interview's audio at each leave (signaling.py, close); the same close in a thread of its own blocks nobody.
blocking_close = signaling.WebSocketClient.close
signaling.WebSocketClient.close = lambda ws: threading.Thread(target=blocking_close, args=(ws,), daemon=True).start()  # type: ignore[method-assign]
# getstream builds about five httpx clients per join (base.py, stream.py), each loading certifi's CA bundle into an
# SSLContext of its own on the event loop (httpx/_transports/default.py): 30-55 ms of every live interview's audio.
httpx._transports.default.create_ssl_context = functools.cache(httpx.create_ssl_context)  # type: ignore[attr-defined]


class AudioBuffer(jitterbuffer.JitterBuffer):
    """aiortc's receive buffer (both legs), for audio: the oldest packet goes once another waits behind it, past a lost
    one (Opus conceals it). aiortc's stops at a lost packet until 16 are queued and then stays that deep for good
    (aiortc #543), and always holds 4 frames (80 ms)."""

    def _remove_frame(self, sequence_number: int) -> jitterbuffer.JitterFrame | None:
        waiting = sorted(filter(None, self._packets), key=lambda p: (p.sequence_number - self._origin) % 65536)
        if self._is_video or len(waiting) < 2:  # aiortc's too: one packet is no complete frame
            return super()._remove_frame(sequence_number)
        self.remove((waiting[0].sequence_number - self._origin) % 65536 + 1)
        return jitterbuffer.JitterFrame(waiting[0]._data, waiting[0].timestamp)


rtcrtpreceiver.JitterBuffer = AudioBuffer  # the module global aiortc's receivers build theirs from


class AudioOnlyEdge(getstream.Edge):
    def _get_subscription_config(self) -> tracks.TrackSubscriptionConfig:  # the edge's only hook: no video at all
        return tracks.TrackSubscriptionConfig(track_types=[tracks.TrackType.TRACK_TYPE_AUDIO])


class Interviewer(openai.Realtime):
    """One interview's OpenAI Realtime session, and the Agent's multi-speaker filter too (an `AudioFilter` by its two
    methods, `process_audio` and `clear`): whether alone on the call or not, it hears the Stream user `candidate` alone,
    and sets `heard` once it has. `lines` is what was said, by OpenAI's item id, in the order it was spoken (OpenAI
    transcribes the candidate's turn after the reply may begin)."""

    async def process_audio(self, pcm: Any, participant: Any) -> None:  # as a filter: None, all it needed is sent
        if participant.user_id == self.candidate:
            self.heard.set()
            await super().process_audio(pcm, participant)

    def clear(self, participant: Any = None) -> None:
        """Nothing to clear: no speaker holds a lock."""

    async def watch_video_track(self, *args: Any, **kwargs: Any) -> None:
        """Never: the plugin would renegotiate, a second OpenAI session that carries the candidate's camera."""

    async def _handle_openai_event(self, event: dict[str, Any]) -> None:
        kind, item_id = event["type"], event.get("item_id") or event.get("item", {}).get("id")
        # A turn's first event fixes its place and `at`; its transcript (final) may come after the next turn's.
        if kind in ("input_audio_buffer.speech_started", "response.output_item.added") or "transcript" in event:
            role = "interviewer" if kind.startswith("response.") else "candidate"
            line = self.lines.setdefault(item_id, {"role": role, "text": "", "at": datetime.now(UTC).isoformat()})
            line["text"] = event.get("transcript", line["text"])
            asyncio.get_running_loop().call_soon(self.journal)  # apart: a full disk never stops the plugin's handling
        elif kind == "conversation.item.truncated" and item_id in self.lines:  # OpenAI sends no text of what was heard
            self.lines[item_id] |= {"interrupted": True, "spoken_ms": event["audio_end_ms"]}
        # The plugin logs an error event's message and raises a failed response, text and all, in a task nobody awaits.
        if kind != "error" and event.get("response", {}).get("status") != "failed":
            return await super()._handle_openai_event(event)
        log.warning("interview %s: OpenAI sent a failed %s", self.agent.id, kind)  # type: ignore[union-attr]
        self._emit_agent_speech_ended(interrupted=True)  # the plugin's own bookkeeping, without the text
        self._emit_error_event(ConnectionError(f"OpenAI sent a failed {kind}"), context=kind)


class Interviews(AgentLauncher):
    """This process's interviews, on Vision-Agents' launcher and its limits: each conducted, its transcript a file in
    TRANSCRIPT_DIR until GCS (if set) has it. On shutdown, live ones go on for up to DRAIN_TIMEOUT_SECONDS."""

    def __init__(self, settings: Settings) -> None:
        limits = {"max_concurrent_sessions": settings.max_concurrent_interviews, "max_sessions_per_call": 1}
        registry = SessionRegistry(RedisSessionKVStore(url=settings.redis_url)) if settings.redis_url else None
        super().__init__(self.create_agent, self.conduct, settings.idle_timeout_seconds, registry=registry, **limits)
        self.settings, self.directory = settings, settings.transcript_dir
        self.limit = settings.max_interview_minutes * 60
        # One OpenAI client for every interviewer (the plugin never closes the one it would make per agent), bounded:
        # its defaults (600 s, two retries) would hold an unanswered interview for half an hour.
        self.client = AsyncOpenAI(api_key=settings.openai_api_key.get_secret_value(), timeout=10, max_retries=1)
        self.bucket = storage.Client().bucket(settings.gcs_bucket) if settings.gcs_bucket else None
        # What an earlier run or a failed upload left on disk goes to GCS, in the background.
        threading.Thread(target=self.upload, args=[list(self.directory.rglob("*.json"))], daemon=True).start()

    def create_agent(self) -> Agent:
        """An interviewer: its own copy of the session (the plugin writes into it), on an audio-only Stream edge."""
        llm = Interviewer(client=self.client, send_video=False, realtime_session=copy.deepcopy(SESSION))
        user = User(id="ai-interviewer", name="AI Interviewer")
        # The interviewer picks whom it hears, also as the Agent's multi-speaker filter (no Silero VAD model needed).
        return Agent(edge=AudioOnlyEdge(), llm=llm, agent_user=user, multi_speaker_filter=llm)

    async def stop(self) -> None:
        """Live interviews go on until they end or DRAIN_TIMEOUT_SECONDS has passed; the launcher then ends the rest."""
        with contextlib.suppress(ValueError):  # asyncio.wait refuses an empty list: nothing to drain
            await asyncio.wait([s.task for s in self._sessions.values()], timeout=self.settings.drain_timeout_seconds)
        await super().stop()

    async def conduct(self, agent: Agent, call_type: str, call_id: str) -> None:
        """The invited interview until it ends, whatever ends it; its transcript is kept, always, a crash included."""
        invite, started_at, llm, ended = INVITE.get(), datetime.now(UTC), agent.llm, asyncio.Queue()  # why it ended
        llm.candidate, llm.heard, llm.lines, reason, error = invite.candidate_user_id, asyncio.Event(), {}, None, None
        path = self.directory / f"{call_type}/{call_id}/{agent.id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)

        def save(end_reason: str | None) -> Path:
            """The transcript as it stands, on the loop, written whole then renamed: a crash never leaves half of it."""
            doc = {"version": 5, "interview_id": agent.id} | invite.model_dump(exclude={"questions"})
            doc |= {"started_at": started_at.isoformat(), "ended_at": datetime.now(UTC).isoformat()}
            doc |= {"end_reason": end_reason, "error": error, "messages": [x for x in llm.lines.values() if x["text"]]}
            path.with_suffix(".tmp").write_bytes(TypeAdapter(dict).dump_json(doc, indent=1))
            return path.with_suffix(".tmp").replace(path)

        # At each line's first event and final text, until the interview has ended: what a kill -9 or an OOM kill
        # leaves, stored at the next start-up. (The plugin handles each event in a task: late ones keep the ending.)
        llm.journal = lambda: save(reason or "crashed")
        # The service's own clock, not the launcher's: the wrap-up (at once, if longer than the interview), the limit.
        asyncio.get_running_loop().call_later(self.limit - self.settings.wrap_up_seconds, ended.put_nowait, None)
        asyncio.get_running_loop().call_later(self.limit, ended.put_nowait, "time_limit")
        pc = llm.rtc.pc  # the plugin only logs a lost connection (rtc_manager.py: "Reconnection ... not easy")
        pc.on("connectionstatechange", lambda: pc.connectionState in ("failed", "closed") and ended.put_nowait("error"))
        # Vision-Agents 0.6.9: Agent's CallEndedEvent handler awaits close(), which cancels that very handler task,
        # so both wait forever (agents.py on_call_ended); the closure is reachable only through the private map.
        handlers = agent.events._handlers.get(edge.events.CallEndedEvent.type, {})
        agent.events.unsubscribe(next((handler for handler in handlers if "Agent" in handler.__qualname__), None))

        @agent.events.subscribe
        async def on_call_ended(_: edge.events.CallEndedEvent) -> None:
            ended.put_nowait("call_ended")

        try:
            data = invite.model_dump_json(include={"candidate_name", "job_title", "questions", "language"})
            llm.set_instructions(PROMPT.format(settings=self.settings, data=data.translate(NEUTRAL)))
            llm.realtime_session["audio"]["input"]["transcription"]["language"] = invite.language  # sent at the join
            async with agent.join(await agent.create_call(call_type, call_id), participant_wait_timeout=0):
                # getstream's paced tracks hold 300 s (to Stream) and 30 s (to OpenAI): a loop stall would add for good.
                # So 40 ms towards the candidate, as a real-time call; 100 ms towards OpenAI, a cushion that a network
                # stall fills once (the track sends silence when it runs dry) and that then absorbs the next ones.
                agent._audio_track._max_samples = agent._audio_track.sample_rate // 25
                llm.rtc._audio_to_openai_track._max_samples = llm.rtc._audio_to_openai_track.sample_rate // 10
                # Cancelled by the launcher (idle, close request, shutdown), or no candidate came in time.
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(llm.heard.wait(), self.settings.idle_timeout_seconds)
                    await agent.simple_response("Greet the candidate by name and begin the interview.")
                    while not (reason := await ended.get()):  # None: time to wrap up, read at its next turn
                        await llm.rtc._send_event(WRAP_UP.model_dump(exclude_unset=True))  # as the file says it
                # The launcher says why it cancels only in its log: the first of these that holds.
                causes = {"shutdown": not self._running, "no_show": not llm.heard.is_set()}
                causes |= {"candidate_left": agent.idle_for() >= self.settings.idle_timeout_seconds}
                reason = reason or next((cause for cause, held in causes.items() if held), "closed")
                if pc.connectionState in ("failed", "closed"):
                    raise ConnectionError("the OpenAI connection was lost")
                await llm.rtc._send_event({"type": "input_audio_buffer.commit"})  # the plugin has no public commit
                await asyncio.sleep(2)  # for the candidate's last words: OpenAI transcribes a turn after it ends
        except Exception as exc:
            reason, error = "error", f"{type(exc).__name__}: {exc}"
            log.error("interview %s on call %s failed: %s", agent.id, call_id, error)
        finally:  # nothing can skip it; then offered to GCS, if there is a bucket, else TRANSCRIPT_DIR is the store
            await asyncio.to_thread(self.upload, [save(reason)])

    def upload(self, paths: list[Path]) -> None:
        """Blocking, with the client's own retries; the local copy goes only once GCS has the transcript."""
        for path in paths if self.bucket else []:
            blob = self.bucket.blob("transcripts/" + path.relative_to(self.directory).as_posix())  # type: ignore[union-attr]
            try:  # never overwrites: a 412 means an earlier or concurrent attempt already stored this very transcript
                with contextlib.suppress(exceptions.PreconditionFailed, FileNotFoundError):
                    blob.upload_from_filename(path, if_generation_match=0, retry=UPLOAD_RETRY, timeout=10)
                path.unlink(missing_ok=True)
            except Exception as exc:
                log.error("interview %s: GCS upload failed, its transcript waits on disk: %r", path.stem, exc)
