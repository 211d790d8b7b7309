"""The servers the bench measures, each a real uvicorn process on 127.0.0.1.

python -m bench.serve service PORT   this service, real plugins (placeholder credentials: joins fail offline)
python -m bench.serve runner PORT    Vision-Agents' Runner + AgentLauncher as its docs show it, same plugins
python -m bench.serve fakes PORT     this service with the test fakes, audio flowing and transcripts growing
"""

import asyncio
import sys

import uvicorn
from openai import AsyncOpenAI
from vision_agents.core import Agent, AgentLauncher, Runner, User
from vision_agents.core.utils.audio_filter import FirstSpeakerWinsFilter
from vision_agents.plugins import getstream, openai

from bench.live_fakes import ChattyRealtime, StreamingEdge
from config import load_settings
from main import create_runner


def runner_app():
    """The peer: the Runner serving the same agent (same plugins, one shared OpenAI client) with upstream's defaults."""
    settings = load_settings()
    client = AsyncOpenAI(api_key=settings.openai_api_key.get_secret_value())

    def create_agent() -> Agent:
        return Agent(
            edge=getstream.Edge(),
            llm=openai.Realtime(
                model=settings.openai_model, voice=settings.openai_voice, client=client, send_video=False
            ),
            agent_user=User(id="ai-interviewer", name=settings.agent_name),
            multi_speaker_filter=FirstSpeakerWinsFilter(model_dir=str(settings.vad_model_dir)),
        )

    async def join_call(agent: Agent, call_type: str, call_id: str) -> None:
        call = await agent.create_call(call_type, call_id)
        async with agent.join(call):
            await agent.finish()

    return Runner(AgentLauncher(create_agent=create_agent, join_call=join_call)).fast_api


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "service":
        app = create_runner(load_settings()).fast_api
    elif kind == "runner":
        app = runner_app()
    else:
        app = create_runner(load_settings(), make_edge=StreamingEdge, make_llm=ChattyRealtime).fast_api
    asyncio.run(uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error")).serve())
