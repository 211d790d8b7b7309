"""The servers the bench measures, each a real uvicorn process on 127.0.0.1.

python -m bench.serve service PORT   this service, real plugins (placeholder credentials: joins fail offline)
python -m bench.serve runner PORT    Vision-Agents' Runner + AgentLauncher serving the same agent factory
python -m bench.serve fakes PORT     this service with the test fakes, audio flowing and transcripts growing
"""

import asyncio
import sys

import uvicorn
from openai import AsyncOpenAI
from vision_agents.core import Agent, AgentLauncher, Runner
from vision_agents.plugins import getstream, openai

from bench.live_fakes import ChattyRealtime, StreamingEdge
from config import load_settings
from interviewer import agent_factory
from main import create_app


def runner_app():
    settings = load_settings()
    client = AsyncOpenAI(api_key=settings.openai_api_key.get_secret_value())

    def realtime() -> openai.Realtime:
        return openai.Realtime(
            model=settings.openai_model, voice=settings.openai_voice, client=client, send_video=False
        )

    async def join_call(agent: Agent, call_type: str, call_id: str) -> None:
        call = await agent.create_call(call_type, call_id)
        async with agent.join(call):
            await agent.finish()

    launcher = AgentLauncher(create_agent=agent_factory(settings, getstream.Edge, realtime), join_call=join_call)
    return Runner(launcher).fast_api


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "service":
        app = create_app(load_settings())
    elif kind == "runner":
        app = runner_app()
    else:
        app = create_app(load_settings(), make_edge=StreamingEdge, make_llm=ChattyRealtime)
    asyncio.run(uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error")).serve())
