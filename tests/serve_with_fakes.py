"""`uv run main.py`, with the fake Stream edge and fake OpenAI Realtime: the SIGTERM test's real process."""

import sys

import uvicorn

from config import load_settings
from main import create_app
from tests.fakes import FakeEdge, FakeRealtime

if __name__ == "__main__":
    settings = load_settings()
    app = create_app(settings, make_edge=FakeEdge, make_llm=FakeRealtime)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
