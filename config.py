"""Settings, read from the environment and `.env`; a bad setting stops the service before it starts."""

from pathlib import Path

from pydantic import Field, SecretBytes, SecretStr
from pydantic_settings import BaseSettings


class Settings(BaseSettings, hide_input_in_errors=True, env_ignore_empty=True):  # no secret in an error; empty is unset
    stream_api_key: SecretStr
    stream_api_secret: SecretStr
    openai_api_key: SecretStr
    api_token: SecretBytes = Field(min_length=16)  # bytes: what a constant-time comparison takes
    gcs_bucket: str | None = None
    transcript_dir: Path = Path("transcripts")
    max_concurrent_interviews: int = Field(4, gt=0)  # one process, one core: kept up with 6 (BENCHMARKS.md)
    max_interview_minutes: float = Field(30, gt=0, le=55)  # an OpenAI Realtime session lasts 60 minutes at most
    idle_timeout_seconds: float = Field(60, gt=0)
    wrap_up_seconds: float = Field(120, ge=0)  # longer than the interview: a wrap-up from the start
    drain_timeout_seconds: float = Field(5, ge=0)  # a plain `docker stop` (10 s) still stores every transcript
    redis_url: str | None = None
    host: str = "0.0.0.0"  # noqa: S104 (a container must listen on every interface)
    port: int = Field(8000, ge=1, le=65535)
    log_level: str = Field("info", pattern="^(critical|error|warning|info|debug)$")
