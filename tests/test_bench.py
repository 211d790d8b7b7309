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


def test_capacity_quick_has_audio_both_ways_no_camera_for_the_service_and_both_speakers_in_the_transcripts():
    """Both legs on the wire (the Stream and OpenAI stand-ins in processes of their own), 2 interviews, camera on;
    the conversation's latency measured each way (markers between the stand-ins), with generous bounds only."""
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--capacity", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 live interviews" in result.stdout, result.stdout
    measured = json.loads(next(line for line in result.stderr.splitlines() if line.startswith('{"service"')))
    for kind in ("service", "runner"):
        level, openai, stream = measured[kind]["levels"]["2"], measured[kind]["openai"], measured[kind]["stream"]
        assert openai["voiced_frames_in"] > 0, (kind, openai)  # the candidate's speech reached OpenAI, through WebRTC
        assert level["loud_frames"] > 0 and stream["loud_frames"] > 0, (kind, level)  # the interviewer's voice, Stream
        assert {"ai-interviewer", "candidate-7"} <= set(stream["speakers"]), (kind, stream)  # the chat's transcript
        for way in ("to_openai", "to_candidate"):  # a marker from each stand-in found at the other, in under 2 s
            latency = level["latency"][way]
            assert latency["found"] > 0 and 0 < latency["p50_ms"] <= latency["p99_ms"] < 2000, (kind, way, latency)
        assert set(level["cpus"]) == {"server", "stream", "openai", "rig"}, level["cpus"]  # every process's CPU
    service, runner = measured["service"], measured["runner"]
    assert service["stream"]["video_subscriptions"] == 0 and service["stream"]["video_frames_sent"] == 0, service
    assert service["openai"]["peers"] == 2, service["openai"]  # one OpenAI session per interview
    assert runner["stream"]["video_subscriptions"] > 0 and runner["stream"]["video_frames_sent"] > 0, runner  # on
    transcripts = service["transcripts"]
    assert len(transcripts) == 2
    for doc in transcripts:
        assert {"interviewer", "candidate"} <= {m["role"] for m in doc["messages"]}, doc["messages"]
    print(result.stdout)
