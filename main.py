"""interview-agent: the HTTP contract the platform's backend codes against, on Vision-Agents' Runner."""

import hmac
import logging
from typing import Annotated, Any

from dotenv import load_dotenv
from fastapi import Depends, HTTPException, security
from vision_agents.core import Runner, ServeOptions, agents

from config import Settings
from interview import INVITE, Interviews, Invite

Credentials = Annotated[security.HTTPAuthorizationCredentials | None, Depends(security.HTTPBearer(auto_error=False))]
REFUSED: dict[int | str, Any] = {code: {"model": dict[str, str]} for code in (401, 409, 429)}  # {"detail": "..."}


def create_runner(settings: Settings) -> Runner:
    """The service: POST /interviews and the bearer token, on Vision-Agents' Runner and this process's interviews."""

    def authorized(bearer: Credentials) -> None:
        if not bearer or not hmac.compare_digest(bearer.credentials.encode(), settings.api_token.get_secret_value()):
            raise HTTPException(401, "Send 'Authorization: Bearer <API_TOKEN>'", {"WWW-Authenticate": "Bearer"})

    def invite_only() -> None:
        raise HTTPException(405, "Start interviews with POST /interviews: an interview needs the candidate's data")

    guards = dict.fromkeys(["can_close_session", "can_view_session", "can_view_metrics"], authorized)
    runner = Runner(Interviews(settings), ServeOptions(cors_allow_origins=(), can_start_session=invite_only, **guards))

    @runner.fast_api.post("/interviews", status_code=202, dependencies=[Depends(authorized)], responses=REFUSED)
    async def invite(body: Invite) -> dict[str, str]:
        INVITE.set(body)  # uvicorn serves only once the launcher is warmed up, and no longer once it stops
        try:
            session = await runner.fast_api.state.launcher.start_session(body.call_id, body.call_type)
        except agents.exceptions.MaxSessionsPerCallExceeded:
            raise HTTPException(409, f"An interviewer is already on call {body.call_id}") from None
        except agents.exceptions.MaxConcurrentSessionsExceeded:
            raise HTTPException(429, "MAX_CONCURRENT_INTERVIEWS reached; retry later", {"Retry-After": "30"}) from None
        return {"interview_id": session.id, "call_id": body.call_id, "call_type": body.call_type, "status": "starting"}

    return runner


def main() -> None:
    load_dotenv(".env")  # the working directory's; the Stream SDK reads its credentials from the environment
    settings = Settings()  # pydantic's ValidationError names every bad setting
    # Libraries log instructions (candidate data), transcripts and tokens below WARNING: LOG_LEVEL is for ours alone.
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("interview_agent").setLevel(settings.log_level.upper())
    create_runner(settings).serve(settings.host, settings.port, "WARNING", http_log_level=settings.log_level)


if __name__ == "__main__":
    main()
