"""The HTTP surface under fuzzing of its own OpenAPI schema, and what reaches the logs."""

import logging

import hypothesis
import pytest
import schemathesis

from tests.conftest import AUTH, TOKEN, invite_body, running
from tests.fakes import CALLS


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory, vad_model_dir):
    from config import Settings
    from main import create_app
    from tests.fakes import FakeEdge, FakeRealtime

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        stream_api_key="k",
        stream_api_secret="s",
        openai_api_key="sk",
        api_token=TOKEN,
        transcript_dir=tmp_path_factory.mktemp("fuzz"),
        vad_model_dir=vad_model_dir,
        gcs_bucket=None,
    )
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(settings, FakeEdge, FakeRealtime))


def test_openapi_fuzzing(api_schema):
    """No 5xx, and every status and body documented: with the token, and with whatever schemathesis sends."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) == 5
    for operation in operations:

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(max_examples=40, deadline=None, suppress_health_check=list(hypothesis.HealthCheck))
        def check(case):
            case.call_and_validate(headers=AUTH)
            case.call_and_validate()

        check()


async def test_malformed_json_gets_a_documented_422(make_settings):
    async with running(make_settings()) as (client, _):
        response = await client.post(
            "/interviews", content=b'{"call_id": ', headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422 and response.json()["detail"]
        schema = (await client.get("/openapi.json")).json()
    documented = schema["paths"]["/interviews"]["post"]["responses"]
    assert {"202", "401", "409", "422", "429", "503"} <= documented.keys()


async def test_candidate_names_are_logged_only_at_debug(make_settings, caplog):
    caplog.set_level(logging.DEBUG)
    async with running(make_settings()) as (client, _):
        await client.post("/interviews", json=invite_body("logs-1", candidate_name="Grace Hopper"))
        edge = await CALLS.wait_joined("logs-1")
        edge.llm.say("Welcome Grace, tell me about compilers.")
        await edge.candidate_says("I wrote the first one.")
        edge.end_call()
    above_debug = [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG]
    everything = [r.getMessage() for r in caplog.records]
    assert not any("Grace" in line for line in above_debug)
    assert not any("first one" in line or "compilers" in line or TOKEN in line for line in everything)
