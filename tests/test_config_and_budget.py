"""Start-up configuration errors, and the size of the product code."""

import ast
import io
import json
import os
import subprocess
import sys
import tokenize
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, TOKEN

PRODUCT = sorted(p for p in ROOT.glob("*.py"))
# The service's budget, as ../shared/tools/loc.py measures it: main.py < 100, config.py < 50, all < 200.
LIMITS = {"main.py": 100, "config.py": 50}
TOTAL_BUDGET = 200


def executable_lines(path: Path) -> int:
    """Lines that are not blank, not comments, not docstrings (the counting of shared/tools/loc.py)."""
    source = path.read_text()
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and body:
            first = body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                docstrings.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    skipped = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skipped:
            lines.update(n for n in range(token.start[0], token.end[0] + 1) if n not in docstrings)
    return len(lines)


def test_line_budget():
    counts = {path.name: executable_lines(path) for path in PRODUCT}
    print(f"executable lines: {counts}, total {sum(counts.values())} (budget < {TOTAL_BUDGET})")
    assert counts.keys() == {"main.py", "config.py", "interview.py"}
    for name, limit in LIMITS.items():
        assert counts[name] < limit, f"{name} has {counts[name]} executable lines (limit < {limit})"
    assert sum(counts.values()) < TOTAL_BUDGET, f"product code has {sum(counts.values())} lines"


def run_config(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    code = "from dotenv import load_dotenv; load_dotenv('.env'); from config import Settings; Settings()"  # as main()
    environment = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)} | env
    return subprocess.run([sys.executable, "-c", code], env=environment, cwd=cwd, capture_output=True, text=True)


def test_missing_and_invalid_settings_stop_the_service_naming_each(tmp_path):
    result = run_config({"MAX_CONCURRENT_INTERVIEWS": "zero", "PORT": "70000", "MAX_INTERVIEW_MINUTES": "90"}, tmp_path)
    assert result.returncode != 0 and "7 validation errors for Settings" in result.stderr, result.stderr
    named = {line for line in result.stderr.splitlines() if line and not line.startswith((" ", "Traceback"))}
    for name in ("stream_api_key", "stream_api_secret", "openai_api_key", "api_token", "max_concurrent_interviews"):
        assert name in named, result.stderr
    assert {"port", "max_interview_minutes"} <= named  # OpenAI Realtime sessions last 60 minutes at most


def test_settings_come_from_dotenv_and_secrets_never_print(tmp_path):
    secrets = {"STREAM_API_KEY": "k-secret-1", "STREAM_API_SECRET": "s-secret-2", "OPENAI_API_KEY": "sk-secret-3"}
    dotenv = [f"{k}={v}" for k, v in secrets.items()] + ["API_TOKEN=tiny-tok", "LOG_LEVEL=loud"]
    (tmp_path / ".env").write_text("\n".join(dotenv))
    result = run_config({}, tmp_path)
    assert result.returncode != 0 and "2 validation errors for Settings" in result.stderr, result.stderr
    assert "\napi_token\n" in result.stderr and "\nlog_level\n" in result.stderr
    assert not any(secret in result.stderr + result.stdout for secret in [*secrets.values(), "tiny-tok"])


def test_example_env_documents_every_setting():
    from config import Settings

    documented = {
        line.split("=")[0].lstrip("# ") for line in (ROOT / ".env.example").read_text().splitlines() if "=" in line
    }
    assert {name.upper() for name in Settings.model_fields} <= documented


def test_requirements_txt_is_the_lock_exported():
    """`uv pip install -r requirements.txt` installs exactly what `uv sync` does."""
    command = ["uv", "export", "--quiet", "--frozen", "--format", "requirements-txt", "--no-dev", "--no-emit-project"]
    exported = subprocess.run([*command, "--no-header"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    committed = (ROOT / "requirements.txt").read_text()
    assert committed.split("\n", 2)[2].strip() == exported.strip(), (
        "run: uv export --no-dev --no-emit-project -o requirements.txt"
    )


def test_the_shared_line_counter_agrees():
    """`python3 ../shared/tools/loc.py` is the measure of record; where it is beside the repo, it must pass too."""
    counter = ROOT.parent / "shared" / "tools" / "loc.py"
    if not counter.exists():
        pytest.skip("../shared/tools/loc.py is not beside this checkout")
    result = subprocess.run([sys.executable, str(counter), str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_a_copied_env_example_with_nothing_filled_in_names_every_required_setting(tmp_path):
    """A newcomer's first mistake: `cp .env.example .env`, nothing filled in (or only API_TOKEN)."""
    example = (ROOT / ".env.example").read_text()
    (tmp_path / ".env").write_text(example)
    result = run_config({}, tmp_path)
    named = {line for line in result.stderr.splitlines() if line and not line.startswith((" ", "Traceback"))}
    assert result.returncode != 0 and "4 validation errors for Settings" in result.stderr, result.stderr
    assert {"stream_api_key", "stream_api_secret", "openai_api_key", "api_token"} <= named, result.stderr
    # The settings' own error, not a library failing later (OpenAI's "Missing credentials", getstream's "api_key").
    assert "ValidationError: 4 validation errors for Settings" in result.stderr, result.stderr

    (tmp_path / ".env").write_text(example.replace("API_TOKEN=", f"API_TOKEN={TOKEN}", 1))
    result = run_config({}, tmp_path)
    assert result.returncode != 0 and "3 validation errors for Settings" in result.stderr, result.stderr
    assert "Missing credentials" not in result.stderr and "api_key is required" not in result.stderr


def serve_with_a_changed_file(tmp_path: Path, name: str, change: Any) -> subprocess.CompletedProcess[str]:
    """`main.py` started from a copy of the service in which the JSON file `name` was changed by `change`."""
    for file in ("main.py", "config.py", "interview.py", "interviewer_prompt.md", *DATA):
        (tmp_path / file).write_bytes((ROOT / file).read_bytes())
    document = json.loads((ROOT / name).read_text())
    change(document)
    (tmp_path / name).write_text(json.dumps(document))
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "API_TOKEN": TOKEN, "STREAM_API_KEY": "k"}
    env |= {"STREAM_API_SECRET": "s", "OPENAI_API_KEY": "sk-x", "PORT": "9", "HOST": "127.0.0.1"}
    return subprocess.run(
        [sys.executable, "main.py"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )


DATA = ("interviewer_session.json", "interviewer_wrap_up.json")


def test_a_bad_interviewer_session_file_stops_the_service_before_it_serves(tmp_path):
    """`interviewer_session.json` is checked against OpenAI's types at start-up: the error names the file and field."""
    result = serve_with_a_changed_file(
        tmp_path, "interviewer_session.json", lambda s: s["audio"]["input"]["turn_detection"].update(eagerness="sleepy")
    )
    assert result.returncode != 0 and "interviewer_session.json" in result.stderr, result.stderr
    assert "turn_detection.SemanticVad.eagerness" in result.stderr and "'low', 'medium', 'high'" in result.stderr
    assert "Uvicorn running" not in result.stderr and "Started server" not in result.stderr


def test_a_bad_wrap_up_file_stops_the_service_before_it_serves(tmp_path):
    """`interviewer_wrap_up.json` is checked against OpenAI's event type at start-up, naming the file and the field."""
    result = serve_with_a_changed_file(tmp_path, "interviewer_wrap_up.json", lambda e: e["item"].update(role="sistem"))
    assert result.returncode != 0 and "interviewer_wrap_up.json" in result.stderr, result.stderr
    assert "item.RealtimeConversationItemSystemMessage.role" in result.stderr, result.stderr
    assert "Uvicorn running" not in result.stderr and "Started server" not in result.stderr
