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


def test_network_quick_shapes_the_candidates_leg_and_measures_continuity_each_way_and_a_join():
    """The candidate's leg through the seeded home Wi-Fi profile (issue 26), one interview for a few seconds, then one
    more joining beside it: the stand-ins shaped packets both ways, markers were found and continuity judged each
    way, the join's loop stall and the live interview's losses measured. Generous bounds only: no timing asserted."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.latency", "network", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| wifi |" in result.stdout, result.stdout
    (measured,) = json.loads(next(line for line in result.stderr.splitlines() if line.startswith('{"network"')))[
        "network"
    ]
    for way in ("up", "down"):  # the profile applied, each way: packets dropped or reordered
        (shaped,) = measured["network"][way]
        assert shaped["profile"] == "wifi" and shaped["packets"] > 100, shaped
        assert shaped["dropped"] + shaped["reordered"] > 0, shaped
    assert measured["network"]["playout"][0]["played"] > 100, measured["network"]  # the browser-like buffer played
    for way in ("to_openai", "to_candidate"):
        figures = measured[way]
        assert figures["found"] > 0 and 0 < figures["p50_ms"] < 4000, (way, figures)
        continuity = figures["continuity"]
        assert continuity["windows"] > 100 and 0 <= continuity["broken_share"] <= 1, (way, continuity)
        assert continuity["longest_dropout_ms"] >= 0, (way, continuity)
    join = measured["join"]
    assert join["joins"] == 1 and join["lag_max_ms"] > 0 and join["live"]["expected_frames"] > 0, join
    assert join["live_continuity"]["to_openai"]["windows"] > 0, join
    print(result.stdout)


def test_journal_bench_prints_each_size_and_dump():
    result = subprocess.run(
        [sys.executable, "-m", "bench.journal", "--rounds", "1"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith(("| 20 ", "| 300 "))]
    assert len(rows) == 4 and sum("pydantic (the service)" in row for row in rows) == 2, result.stdout
