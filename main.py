"""interview-agent: the HTTP contract the platform's backend codes against, on Vision-Agents' Runner."""

import copy
import hmac
import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from openai import AsyncOpenAI
from vision_agents.core import Agent, Runner, ServeOptions, User
from vision_agents.core.agents.exceptions import MaxConcurrentSessionsExceeded, MaxSessionsPerCallExceeded

from config import Settings, load_settings
from interview import INVITE, SESSION, AudioOnlyEdge, Interviewer, Interviews, Invite

Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))]
Factory = Callable[[], Any] | None  # a test's stand-in for the Stream edge or the OpenAI Realtime LLM
REFUSED: dict[int | str, Any] = {code: {"model": dict[str, str]} for code in (401, 409, 429)}  # {"detail": "..."}


def create_runner(settings: Settings, make_edge: Factory = None, make_llm: Factory = None) -> Runner:
    """The service; `make_edge` and `make_llm` build each interviewer's Stream edge and OpenAI Realtime LLM."""
    # One OpenAI client for every interviewer (the plugin never closes the one it would make per agent), bounded:
    # its defaults (600 s, two retries) would hold an unanswered interview for half an hour.
    client = AsyncOpenAI(api_key=settings.openai_api_key.get_secret_value(), timeout=10, max_retries=1)

    def create_agent() -> Agent:
        session = copy.deepcopy(SESSION)  # the plugin writes into the session it is given
        llm = make_llm() if make_llm else Interviewer(client=client, send_video=False, realtime_session=session)
        user = User(id="ai-interviewer", name="AI Interviewer")
        # The interviewer picks whom it hears, also as the Agent's multi-speaker filter (no Silero VAD model needed).
        return Agent(edge=(make_edge or AudioOnlyEdge)(), llm=llm, agent_user=user, multi_speaker_filter=llm)

    launcher = Interviews(settings, create_agent)

    def authorized(credentials: Credentials) -> None:
        token = settings.api_token.get_secret_value().encode()
        if not credentials or not hmac.compare_digest(credentials.credentials.encode(), token):
            raise HTTPException(401, "Send 'Authorization: Bearer <API_TOKEN>'", {"WWW-Authenticate": "Bearer"})

    def by_invite_only() -> None:
        raise HTTPException(405, "Start interviews with POST /interviews: an interview needs the candidate's data")

    guards = dict.fromkeys(["can_close_session", "can_view_session", "can_view_metrics"], authorized)
    runner = Runner(launcher, ServeOptions(cors_allow_origins=(), can_start_session=by_invite_only, **guards))

    @runner.fast_api.post("/interviews", status_code=202, dependencies=[Depends(authorized)], responses=REFUSED)
    async def invite(body: Invite) -> dict[str, str]:
        INVITE.set(body)  # uvicorn serves only once the launcher is warmed up, and no longer once it stops
        try:
            session = await launcher.start_session(body.call_id, body.call_type)
        except MaxSessionsPerCallExceeded:
            raise HTTPException(409, f"An interviewer is already on call {body.call_id}") from None
        except MaxConcurrentSessionsExceeded:
            raise HTTPException(429, "MAX_CONCURRENT_INTERVIEWS reached; retry later", {"Retry-After": "30"}) from None
        return {"interview_id": session.id, "call_id": body.call_id, "call_type": body.call_type, "status": "starting"}

    return runner


def main() -> None:
    settings = load_settings()
    level = settings.log_level.upper()
    # Libraries log instructions (candidate data), transcripts and tokens below WARNING: LOG_LEVEL is for ours alone.
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("interview_agent").setLevel(level)
    create_runner(settings).serve(settings.host, settings.port, agents_log_level="WARNING", http_log_level=level)


if __name__ == "__main__":
    main()
