"""interview-agent: the HTTP contract the platform's backend codes against, and the process entry point."""

import hmac
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from openai import AsyncOpenAI
from pydantic import BaseModel
from vision_agents.core.agents.exceptions import MaxConcurrentSessionsExceeded, MaxSessionsPerCallExceeded
from vision_agents.plugins import getstream, openai

from config import Settings, load_settings
from interviewer import CallId, Invite, log
from interviews import AlreadyOnCall, Interviews

RETRY_SOON = {"Retry-After": "5"}
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))]


class Problem(BaseModel):
    detail: str


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Problem} for code in codes}


def create_app(
    settings: Settings, make_edge: Callable[[], Any] | None = None, make_llm: Callable[[], Any] | None = None
) -> FastAPI:
    """The service; `make_edge` and `make_llm` build each agent's Stream edge and OpenAI Realtime LLM."""
    # Vision-Agents logs transcripts and the session's instructions (candidate data) at INFO.
    for library in ("vision_agents", "getstream", "aiortc", "aioice"):
        logging.getLogger(library).setLevel(logging.WARNING)

    # One OpenAI client for every interviewer: the plugin never closes the one it would make per agent.
    openai_client = AsyncOpenAI(api_key=settings.openai_api_key.get_secret_value())

    def realtime() -> openai.Realtime:
        model, voice = settings.openai_model, settings.openai_voice
        return openai.Realtime(model=model, voice=voice, client=openai_client, send_video=False)

    interviews = Interviews(settings, make_edge or getstream.Edge, make_llm or realtime)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await interviews.start()
        yield
        await interviews.stop()
        await openai_client.close()

    def authorized(credentials: Credentials) -> None:
        token = settings.api_token.get_secret_value().encode()
        if not credentials or not hmac.compare_digest(credentials.credentials.encode(), token):
            raise HTTPException(401, "Send 'Authorization: Bearer <API_TOKEN>'", {"WWW-Authenticate": "Bearer"})

    app = FastAPI(title="interview-agent", lifespan=lifespan, responses=problems(422))
    app.state.interviews = interviews
    guarded = {"dependencies": [Depends(authorized)]}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/ready", responses=problems(503))
    async def ready() -> JSONResponse:
        body = {"ready": interviews.ready, "live_interviews": len(interviews.live)}
        body |= {"transcript_backlog": interviews.store.backlog()}
        detail = interviews.failure or ("shutting down" if interviews.draining else "warming up")
        return JSONResponse(body if interviews.ready else body | {"detail": detail}, 200 if body["ready"] else 503)

    @app.post("/interviews", status_code=202, **guarded, responses=problems(401, 409, 429, 503))
    async def invite(body: Invite.limited_to(settings.max_interview_minutes)) -> dict[str, str]:  # type: ignore[valid-type]
        if not interviews.ready:
            raise HTTPException(503, "Warming up or shutting down; retry shortly", RETRY_SOON)
        try:
            return await interviews.invite(body)
        except Exception as exc:
            raise refusal(exc, body.call_id) from None

    @app.get("/interviews/{call_id}", **guarded, responses=problems(401, 404))
    async def interview_status(call_id: CallId) -> dict[str, str]:
        return await interviews.find(call_id) or not_found(call_id)

    @app.delete("/interviews/{call_id}", status_code=202, **guarded, responses=problems(401, 404))
    async def stop_interview(call_id: CallId) -> dict[str, str]:
        return await interviews.end(call_id) or not_found(call_id)

    return app


def not_found(call_id: str) -> dict[str, str]:
    raise HTTPException(404, f"No interview runs on call {call_id}")


def refusal(exc: Exception, call_id: str) -> HTTPException:
    if isinstance(exc, AlreadyOnCall | MaxSessionsPerCallExceeded):
        return HTTPException(409, f"An interviewer is already on call {call_id}")
    if isinstance(exc, MaxConcurrentSessionsExceeded):
        return HTTPException(429, "MAX_CONCURRENT_INTERVIEWS are running; retry later", {"Retry-After": "30"})
    log.error("could not start an interviewer for call %s: %r", call_id, exc)
    return HTTPException(503, "Could not start an interviewer; retry shortly", RETRY_SOON)


def main() -> None:
    settings = load_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
