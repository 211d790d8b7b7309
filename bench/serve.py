"""The servers the bench measures, each a real uvicorn process on 127.0.0.1.

python -m bench.serve service PORT          this service, real plugins (placeholder credentials: joins fail offline)
python -m bench.serve runner PORT           Vision-Agents' Runner + AgentLauncher as its docs show it, same plugins
python -m bench.serve fakes PORT            this service with the test fakes, frames flowing and lines said
python -m bench.serve capacity-service PORT this service as it ships (its own edge and interviewer), real plugins
python -m bench.serve capacity-runner PORT  the Runner with plain getstream.Edge and openai.Realtime(send_video=False)

With STREAM_STANDIN_URL set, every getstream.Edge the process builds talks to the Stream stand-in there
(`python -m tests.standins.stream`, a process of its own); OPENAI_BASE_URL points openai.Realtime at the OpenAI one.
The capacity servers also answer `GET /bench/stats` (the event loop's lag and the garbage collector's pauses since the
last call) and `POST /bench/gc-freeze` (`gc.collect()` then `gc.freeze()`: what is alive after the warm-up is never
scanned again); the audio they send is timed where it arrives, at the stand-ins.

Levers for the bench's A/B, none of them in the product: BENCH_LOOP=uvloop runs the server on uvloop (if installed;
the default is asyncio's loop), BENCH_GC_THRESHOLD=A,B,C sets `gc.set_threshold(A, B, C)` at start. The product
served is whatever `main`, `config` and `interview` are first on PYTHONPATH (the rig puts another commit's first).
"""

import asyncio
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from dotenv import load_dotenv
from openai import AsyncOpenAI
from vision_agents.core import Agent, AgentLauncher, Runner, User
from vision_agents.core.utils.audio_filter import FirstSpeakerWinsFilter
from vision_agents.plugins import getstream, openai

import interview
from bench import live_fakes
from config import Settings
from main import create_runner
from tests.standins.network import loopback_only
from tests.standins.stream import point_getstream_at


def load_settings() -> Settings:
    load_dotenv(".env")  # as main() does
    return Settings()


LAGS: list[float] = []  # how late each 10 ms probe woke up, in seconds
GC_PAUSES: list[tuple[int, float]] = []  # (generation, seconds) of each collection
_gc_started = 0.0


def time_gc(phase: str, info: dict[str, Any]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
    else:
        GC_PAUSES.append((info["generation"], time.perf_counter() - _gc_started))


def runner_app(make_edge: Callable[[], Any] = getstream.Edge) -> Any:
    """The peer: the Runner serving the same agent (same plugins, one shared OpenAI client) with upstream's defaults."""
    settings = load_settings()
    client = AsyncOpenAI(api_key=settings.openai_api_key.get_secret_value())

    def create_agent() -> Agent:  # its default multi-speaker filter needs the Silero VAD model: VAD_MODEL_DIR
        return Agent(
            edge=make_edge(),
            llm=openai.Realtime(client=client, send_video=False),
            agent_user=User(id="ai-interviewer", name="AI Interviewer"),
            multi_speaker_filter=FirstSpeakerWinsFilter(model_dir=os.environ["VAD_MODEL_DIR"]),
        )

    async def join_call(agent: Agent, call_type: str, call_id: str) -> None:
        call = await agent.create_call(call_type, call_id)
        async with agent.join(call):
            await agent.simple_response("Greet the candidate by name and begin the interview.")
            await agent.finish()

    return Runner(AgentLauncher(create_agent=create_agent, join_call=join_call)).fast_api


async def probe_loop_lag() -> None:
    while True:
        started = time.perf_counter()
        await asyncio.sleep(0.01)
        LAGS.append(time.perf_counter() - started - 0.01)


def with_stats(app: Any) -> Any:
    @app.get("/bench/stats")
    async def stats() -> dict[str, Any]:
        lags = sorted(LAGS) or [0.0]
        LAGS.clear()
        p99 = lags[min(len(lags) - 1, round(0.99 * (len(lags) - 1)))]
        pauses = list(GC_PAUSES)
        GC_PAUSES.clear()
        figures = {
            "lag_p50_ms": statistics.median(lags) * 1000,
            "lag_p99_ms": p99 * 1000,
            "lag_max_ms": lags[-1] * 1000,
        }
        figures |= {f"gc{n}_collections": sum(g == n for g, _ in pauses) for n in range(3)}
        figures |= {"gc_total_ms": sum(p for _, p in pauses) * 1000}
        figures |= {"gc_max_ms": max((p for _, p in pauses), default=0) * 1000, "gc_threshold": gc.get_threshold()}
        return figures | {"loop": type(asyncio.get_running_loop()).__module__, "gc_frozen": gc.get_freeze_count()}

    @app.post("/bench/gc-freeze")
    async def gc_freeze() -> dict[str, Any]:
        gc.collect()
        gc.freeze()
        return {"frozen": gc.get_freeze_count()}

    return app


async def serve(app: Any, port: int) -> None:
    probe = asyncio.create_task(probe_loop_lag())
    await uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error")).serve()
    probe.cancel()


if __name__ == "__main__":
    loopback_only()  # every packet of the bench on 127.0.0.1 (ORT_DISABLE_TELEMETRY comes in the environment)
    kind, port = sys.argv[1], int(sys.argv[2])
    gc.callbacks.append(time_gc)
    if os.environ.get("BENCH_GC_THRESHOLD"):
        gc.set_threshold(*(int(n) for n in os.environ["BENCH_GC_THRESHOLD"].split(",")))
    if os.environ.get("STREAM_STANDIN_URL"):
        point_getstream_at(os.environ["STREAM_STANDIN_URL"])
    if kind == "service":
        app = create_runner(load_settings()).fast_api
    elif kind == "runner":
        app = runner_app()
    elif kind == "fakes":
        interview.AudioOnlyEdge = live_fakes.StreamingEdge  # type: ignore[misc]
        interview.Interviewer = lambda **_: live_fakes.ChattyRealtime()  # type: ignore[misc, assignment]
        app = create_runner(load_settings()).fast_api
    elif kind == "capacity-service":
        app = with_stats(create_runner(load_settings()).fast_api)
    else:
        app = with_stats(runner_app())
    loop_factory = None
    if os.environ.get("BENCH_LOOP") == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(app, port))
