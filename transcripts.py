"""Transcripts: each kept on local disk until GCS (or the local directory) has it, then announced by webhook."""

import asyncio
import concurrent.futures
import contextlib
import hashlib
import hmac
import json
import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from google.api_core.exceptions import PreconditionFailed
from google.api_core.retry import Retry
from google.cloud import storage

from config import Settings

log = logging.getLogger("interview_agent")


class TranscriptStore:
    """The spool holds `ID.partial` while an interview runs and `ID.json` once it ended, until storage has it."""

    def __init__(self, settings: Settings) -> None:
        self.settings, self.spool = settings, settings.transcript_dir / ".spool"
        self.spool.mkdir(parents=True, exist_ok=True)
        self.bucket = storage.Client().bucket(settings.gcs_bucket) if settings.gcs_bucket else None
        self.retry = Retry(initial=0.2, maximum=5, timeout=settings.upload_retry_seconds)
        self.ended, self.webhooks = asyncio.Event(), set[asyncio.Task[None]]()

    def uri(self, doc: dict[str, Any]) -> str:
        if self.bucket:
            return f"gs://{self.bucket.name}/{self.settings.gcs_prefix}{name(doc)}"
        return (self.settings.transcript_dir / name(doc)).resolve().as_uri()

    def backlog(self) -> int:
        return len(list(self.spool.glob("*.json")))

    def save_progress(self, doc: dict[str, Any]) -> None:
        write_atomically(self.spool / f"{doc['interview_id']}.partial", doc)

    def save_final(self, doc: dict[str, Any], reason: str, error: str | None) -> None:
        """Synchronous, so that no cancellation can skip it; shipping follows at once."""
        write_atomically(self.spool / f"{doc['interview_id']}.json", finalise(doc, reason, error))
        (self.spool / f"{doc['interview_id']}.partial").unlink(missing_ok=True)
        log.info("interview %s on call %s ended: %s", doc["interview_id"], doc["call_id"], reason)
        self.ended.set()

    def recover(self) -> None:
        """Finalise as `interrupted` what a crashed run left in progress."""
        for partial in self.spool.glob("*.partial"):
            if not partial.with_suffix(".json").exists():
                ended_at = datetime.fromtimestamp(partial.stat().st_mtime, UTC)
                doc = finalise(json.loads(partial.read_bytes()), "interrupted", None, ended_at)
                write_atomically(partial.with_suffix(".json"), doc)
                log.warning("interview %s was interrupted by a crash; its transcript is kept", doc["interview_id"])
            partial.unlink()

    async def ship_forever(self) -> None:
        while True:
            self.ended.clear()
            await self.ship_backlog()
            with contextlib.suppress(TimeoutError):  # an ending wakes us at once; after a failure, retry later
                async with asyncio.timeout(self.settings.ship_interval_seconds):
                    await self.ended.wait()

    async def ship_backlog(self) -> None:
        """Store every final document at its URI; each leaves the spool only once storage confirmed it."""
        for path in sorted(self.spool.glob("*.json")):
            raw = path.read_bytes()
            doc = json.loads(raw)
            try:
                if self.bucket:
                    await in_daemon_thread(self.upload, self.settings.gcs_prefix + name(doc), raw)
                    path.unlink()
                else:
                    target = self.settings.transcript_dir / name(doc)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(path, target)
            except Exception as exc:
                log.error("transcript of interview %s stays on disk until storage takes it: %r", path.stem, exc)
                return  # the rest waits for the next round
            if self.settings.webhook_url:
                self.webhooks.add(task := asyncio.create_task(self.announce(doc)))
                task.add_done_callback(self.webhooks.discard)

    def upload(self, name: str, data: bytes) -> None:
        try:
            blob = self.bucket.blob(name)  # type: ignore[union-attr]
            blob.upload_from_string(data, "application/json", if_generation_match=0, retry=self.retry, timeout=10)
        except PreconditionFailed:
            log.info("transcript %s was already stored by an earlier attempt", name)

    async def announce(self, doc: dict[str, Any]) -> None:
        """POST the signed `interview.ended` event, retried with backoff; the transcript is already stored."""
        assert self.settings.webhook_url and self.settings.webhook_secret
        keys = ("interview_id", "call_id", "call_type", "end_reason", "duration_seconds")
        event = {"event": "interview.ended", "transcript_uri": self.uri(doc), "message_count": len(doc["messages"])}
        body = json.dumps(event | {k: doc[k] for k in keys} | {"sent_at": iso(datetime.now(UTC))}).encode()
        digest = hmac.new(self.settings.webhook_secret.get_secret_value().encode(), body, hashlib.sha256)
        headers = {"Content-Type": "application/json", "X-Signature-256": f"sha256={digest.hexdigest()}"}
        async with httpx.AsyncClient(timeout=10) as client:
            for attempt in range(5):
                try:
                    response = await client.post(str(self.settings.webhook_url), content=body, headers=headers)
                    if response.status_code < 500:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.5 * 2**attempt)
        log.error("webhook for interview %s failed 5 times; giving up", doc["interview_id"])


def name(doc: dict[str, Any]) -> str:
    """Where a transcript goes, under the bucket's prefix or TRANSCRIPT_DIR."""
    return f"{doc['call_type']}/{doc['call_id']}/{doc['interview_id']}.json"


def finalise(doc: dict[str, Any], reason: str, error: str | None, ended_at: datetime | None = None) -> dict[str, Any]:
    ended_at = ended_at or datetime.now(UTC)
    duration = round((ended_at - datetime.fromisoformat(doc["started_at"])).total_seconds(), 3)
    return doc | {"ended_at": iso(ended_at), "duration_seconds": duration, "end_reason": reason, "error": error}


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def write_atomically(path: Path, doc: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(doc, ensure_ascii=False, indent=1))
    os.replace(temporary, path)


async def in_daemon_thread(function: Callable[..., None], *args: Any) -> None:
    """Blocking I/O off the event loop, in a thread that cannot hold up the process's exit."""
    future: concurrent.futures.Future[None] = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(function(*args))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    await asyncio.wrap_future(future)
