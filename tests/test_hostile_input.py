"""The HTTP surface under fuzzing of its own OpenAPI schema, and what reaches the logs."""

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error

from tests.conftest import AUTH, TOKEN, interviewers_built_with, running

SESSION_ROUTES = [("GET", ""), ("DELETE", ""), ("POST", "/close"), ("GET", "/metrics")]


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    from config import Settings
    from main import create_runner

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        stream_api_key="k",
        stream_api_secret="s",
        openai_api_key="sk",
        api_token=TOKEN,
        transcript_dir=tmp_path_factory.mktemp("fuzz"),
        gcs_bucket=None,
    )
    with interviewers_built_with():
        app = create_runner(settings).fast_api
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


LABELS = ["POST /interviews", "GET /health", "GET /ready", "POST /calls/{call_id}/sessions"]
LABELS += [f"{method} /calls/{{call_id}}/sessions/{{session_id}}{tail}" for method, tail in SESSION_ROUTES]


@pytest.mark.parametrize("label", LABELS)
def test_openapi_fuzzing(api_schema, label):
    """POST /interviews: no 5xx, every status and body documented. The Runner's own routes (upstream's OpenAPI
    leaves out their 401, 404 and 405): no 5xx. With the token, and with whatever schemathesis sends."""
    operations = {op.label: op for op in (result.ok() for result in api_schema.get_all_operations())}
    assert operations.keys() == set(LABELS)
    checks = {} if label == "POST /interviews" else {"checks": [not_a_server_error], "excluded_checks": None}

    @hypothesis.given(case=operations[label].as_strategy())
    @hypothesis.settings(max_examples=40, deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
    def check(case):
        case.call_and_validate(headers=AUTH, **checks)
        case.call_and_validate(**checks)

    check()


async def test_malformed_json_gets_a_documented_422(make_settings):
    async with running(make_settings()) as (client, _):
        response = await client.post(
            "/interviews", content=b'{"call_id": ', headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 422 and response.json()["detail"]
