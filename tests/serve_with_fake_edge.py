"""`uv run main.py` as it is, with only Stream's edge replaced by the in-process fake: OpenAI Realtime is the
service's own plugin, talking WebRTC to OPENAI_BASE_URL (the stand-in). A real service process for the log test."""

import interview
import main
from tests.fakes import FakeEdge
from tests.standins.network import loopback_only

if __name__ == "__main__":
    loopback_only()
    interview.AudioOnlyEdge = FakeEdge  # type: ignore[misc]
    main.main()
