"""The benchmarks' quick variants, so that they cannot rot: every section runs and prints its row."""

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_bench_quick_runs_end_to_end():
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout
    for row in (
        "invite latency: bursts of 20",
        "start-up to /ready",
        "memory per live interview",
        "readable in GCS",
        "event-loop stall",
    ):
        assert row in table, table
    print(table)


def test_capacity_quick_has_audio_both_ways_and_both_speakers_in_the_transcript():
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--capacity", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 live interviews" in result.stdout, result.stdout
    measured = json.loads(next(line for line in result.stderr.splitlines() if line.startswith('{"service"')))
    for kind in ("service", "runner"):
        level = measured[kind]["levels"]["2"]
        assert level["frames_in"] > 0 and level["voiced_frames_out"] > 0, (kind, level)  # candidate in, voice out
    assert measured["openai"]["frames_in"] > 0  # the candidate's audio reached OpenAI's side, through WebRTC
    transcripts = measured["service"]["transcripts"]
    assert len(transcripts) == 2
    for doc in transcripts:
        assert {"interviewer", "candidate"} <= {m["role"] for m in doc["messages"]}, doc["messages"]
    print(result.stdout)
