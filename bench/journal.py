"""What the crash journal costs the event loop: one transcript written whole and renamed, as `conduct`'s `save` does at
each line, for a short and a long interview; the JSON dump the service uses (pydantic's) beside the standard
library's, interleaved in one run. Prints a markdown table: p50 and p99 of each, in ms.

    uv run python -m bench.journal [--rounds N]
"""

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

LINE = "We replayed a week of production traffic against the new ledger, shard by shard. " * 3


def transcript(lines: int) -> dict[str, Any]:
    """A version-5 transcript of `lines` lines of about 250 characters (a long answer), as the service writes it."""
    at = "2026-12-05T10:00:00.000000+00:00"
    messages = [{"role": ("interviewer", "candidate")[n % 2], "text": LINE, "at": at} for n in range(lines)]
    return {"version": 5, "interview_id": "0" * 36, "end_reason": "crashed", "error": None, "messages": messages}


def writer(path: Path, dump: Callable[[dict[str, Any]], bytes]) -> Callable[[dict[str, Any]], None]:
    def write(doc: dict[str, Any]) -> None:
        path.with_suffix(".tmp").write_bytes(dump(doc))
        path.with_suffix(".tmp").replace(path)

    return write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of 100 writes each (default 5)")
    rounds = parser.parse_args().rounds
    path = Path(tempfile.mkdtemp()) / "transcript.json"
    dumps: dict[str, Callable[[dict[str, Any]], bytes]] = {
        "pydantic (the service)": lambda doc: TypeAdapter(dict).dump_json(doc, indent=1),
        "json": lambda doc: json.dumps(doc, ensure_ascii=False, indent=1).encode(),
    }
    print("| lines | size | dump | p50 | p99 |\n|---|---|---|---|---|")
    for lines in (20, 300):
        doc, times = transcript(lines), {name: [] for name in dumps}
        for _ in range(rounds):
            for name, dump in dumps.items():
                write = writer(path, dump)
                for _ in range(100):
                    started = time.perf_counter()
                    write(doc)
                    times[name].append((time.perf_counter() - started) * 1000)
        for name, taken in times.items():
            taken.sort()
            p99 = taken[int(len(taken) * 0.99) - 1]
            size = f"{path.stat().st_size // 1024} KB"
            print(f"| {lines} | {size} | {name} | {statistics.median(taken):.2f} ms | {p99:.2f} ms |")


if __name__ == "__main__":
    main()
