"""Settings, read from the environment and `.env`; a bad setting stops the service before it starts."""

import sys
from pathlib import Path
from typing import Literal

from dotenv import load_dotenv
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings


class Settings(BaseSettings):
    stream_api_key: SecretStr
    stream_api_secret: SecretStr
    openai_api_key: SecretStr
    api_token: SecretStr = Field(min_length=16)
    openai_model: str = "gpt-realtime-2"
    openai_voice: str = "marin"
    agent_name: str = "AI Interviewer"
    gcs_bucket: str | None = None
    gcs_prefix: str = "transcripts/"
    transcript_dir: Path = Path("transcripts")
    max_concurrent_interviews: int = Field(10, gt=0)
    max_interview_minutes: float = Field(30, gt=0)
    idle_timeout_seconds: float = Field(60, gt=0)
    redis_url: str | None = None
    vad_model_dir: Path = Path("/tmp/first_speaker_wins_model")  # noqa: S108 (the library's default)
    host: str = "0.0.0.0"  # noqa: S104 (a container must listen on every interface)
    port: int = Field(8000, ge=1, le=65535)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"


def load_settings() -> Settings:
    """Settings, or one plain line per problem on stderr and exit status 2."""
    load_dotenv(".env")  # the working directory's; the Stream SDK reads its credentials from the environment
    try:
        return Settings()
    except ValidationError as exc:
        for error in exc.errors():
            print(f"config error: {str(error['loc'][0]).upper()}: {error['msg']}", file=sys.stderr)
        raise SystemExit(2) from None
