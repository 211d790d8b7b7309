"""The interviews this replica runs, on Vision-Agents' AgentLauncher: its limits, timeouts and session registry."""

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from vision_agents.core import Agent, AgentLauncher
from vision_agents.core.agents.session_registry import RedisSessionKVStore, SessionRegistry

from config import Settings
from interviewer import Interview, Invite, agent_factory, conduct, log
from transcripts import TranscriptStore

FLUSH_SECONDS = 5  # a crash loses at most this much of a running interview's transcript
SPARE_AGENTS = 20  # built ahead, so a burst of invites does not queue behind agent construction


class AlreadyOnCall(Exception):
    pass


class Interviews:
    def __init__(self, settings: Settings, make_edge: Callable[[], Any], make_llm: Callable[[], Any]) -> None:
        self.settings, self.store, self.draining = settings, TranscriptStore(settings), False
        self.failure: str | None = None  # why warm-up failed: reported by /ready
        self.live: dict[str, Interview] = {}  # by call id; reserved before the launcher starts the session
        self.build, self.spares = agent_factory(settings, make_edge, make_llm), list[Agent]()
        self.launcher = AgentLauncher(
            create_agent=self.create_agent,
            join_call=self.join_call,
            agent_idle_timeout=settings.idle_timeout_seconds,
            max_concurrent_sessions=settings.max_concurrent_interviews,
            max_sessions_per_call=1,
            max_session_duration_seconds=settings.max_interview_minutes * 60,
            maintenance_interval=1.0,
            registry=SessionRegistry(RedisSessionKVStore(url=settings.redis_url)) if settings.redis_url else None,
        )

    @property
    def ready(self) -> bool:
        return self.launcher.ready and not self.draining

    async def start(self) -> None:
        self.store.recover()
        jobs = (self.warm_up(), self.keep_progress(), self.store.ship_forever(), self.keep_spares())
        self.tasks = [asyncio.create_task(job) for job in jobs]

    async def stop(self) -> None:
        """End every interview and store every transcript within the grace; what does not fit stays on disk."""
        self.draining = True
        for task in self.tasks:
            task.cancel()
        try:
            async with asyncio.timeout(self.settings.shutdown_grace_seconds - 1):
                await asyncio.gather(*(spare.close() for spare in self.spares))
                await self.launcher.stop()
                await self.store.ship_backlog()
                await asyncio.gather(*self.store.webhooks)
        except TimeoutError:
            log.error("shutdown grace ran out: %d transcripts stay on disk for the next start", self.store.backlog())

    async def warm_up(self) -> None:
        try:
            await self.launcher.start()
        except Exception as exc:
            self.failure = f"warm-up failed: {exc!r}"
            log.critical("%s; the service stays not ready", self.failure)

    async def invite(self, invite: Invite) -> dict[str, str]:
        if invite.call_id in self.live:  # checked and reserved with no await between: one interviewer per call
            raise AlreadyOnCall(invite.call_id)
        self.live[invite.call_id] = Interview(invite)
        try:
            session = await self.launcher.start_session(invite.call_id, invite.call_type)
        except Exception:
            self.live.pop(invite.call_id, None)
            raise
        accepted = {"interview_id": session.id, "call_id": invite.call_id, "call_type": invite.call_type}
        return accepted | {"status": "starting", "transcript_uri": self.store.uri(accepted)}

    async def find(self, call_id: str) -> dict[str, str] | None:
        """The interview on this call, whichever replica runs it."""
        sessions = await self.launcher.registry.get_for_call(call_id)
        if not sessions:
            return None
        local = self.launcher.get_session(sessions[0].session_id)
        status = "starting" if local and not local.on_call_for() else "in_progress"
        started_at = datetime.fromtimestamp(sessions[0].started_at, UTC).isoformat()
        return {"interview_id": sessions[0].session_id, "call_id": call_id, "status": status, "started_at": started_at}

    async def end(self, call_id: str) -> dict[str, str] | None:
        found = await self.find(call_id)
        if found is None:
            return None
        if not await self.launcher.close_session(found["interview_id"]):  # another replica runs it
            await self.launcher.request_close_session(call_id, found["interview_id"])
        return found | {"status": "stopping"}

    async def join_call(self, agent: Agent, call_type: str, call_id: str) -> None:
        try:
            await conduct(agent, self.live[call_id], self.settings, self.store)
        finally:
            self.live.pop(call_id, None)

    def create_agent(self) -> Agent:
        return self.spares.pop() if self.spares else self.build()

    async def keep_spares(self) -> None:
        """AgentLauncher builds each agent under one lock, ~25 ms each (mostly Stream's own TLS context)."""
        while True:
            if len(self.spares) >= min(SPARE_AGENTS, self.settings.max_concurrent_interviews - len(self.live)):
                await asyncio.sleep(0.2)
                continue
            try:
                self.spares.append(await asyncio.to_thread(self.build))  # off the loop: invites stay fast
            except Exception as exc:
                log.error("could not build an interviewer ahead (retrying in 5 s): %r", exc)
                await asyncio.sleep(5)

    async def keep_progress(self) -> None:
        while True:
            for interview in [i for i in self.live.values() if i.agent]:
                self.store.save_progress(interview.transcript())
            await asyncio.sleep(FLUSH_SECONDS)
