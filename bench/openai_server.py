"""`python -m bench.openai_server PORT [--markers] [--pilot]`: OpenAI Realtime's side for the capacity rig, its own
process.

The one OpenAI stand-in (`tests.standins.openai_realtime.RealtimeStandIn`) with the bench's script: each
interviewer that connects (the real `openai.Realtime` plugin over WebRTC) gets a voice that speaks 2 s in every 4
and, every 4 s, the transcription events of both speakers. `GET /stats` says what arrived from the interviewers;
with `--markers`, the latency markers both ways too (bench/marker.py); with `--pilot`, a pilot tone for a voice and
the continuity of the interviewers' audio (bench/continuity.py).
"""

import asyncio
import sys

from tests.standins.openai_realtime import serve

CHATTER_SECONDS = 4.0

if __name__ == "__main__":
    markers, pilot = "--markers" in sys.argv, "--pilot" in sys.argv
    asyncio.run(serve(int(sys.argv[1]), chatter=CHATTER_SECONDS, markers=markers, pilot=pilot))
