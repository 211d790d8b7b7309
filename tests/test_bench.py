"""The benchmark's quick variant, so that it cannot rot: every section runs and prints its row."""

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
