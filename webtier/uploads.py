"""What the web tier does with an uploaded image, HTTP aside: store it in the input bucket under a
key of our own making (`upload_key`), send the request, wait for the worker's answer (webtier/replies.py
delivers it). With FR_RESULTS_TABLE=1 an upload the results table answers (webtier/results.py: same stem,
same bytes, same model) is stored and answered at once, and the table keeps each worker's answer.
An outcome other than a name is one of the exceptions below; web.py maps each to its HTTP status."""

import re
import time
import uuid

import common
from core.messages import Request, deadline_attribute, encode
from model.files import sha256_hex
from webtier.refusals import Refusal
from webtier.replies import DeadLettered

log = common.EventLog("web")

MAX_STEM_CHARS = 100


def milliseconds(start, end):
    """Milliseconds from `start` to `end` (monotonic seconds), to a tenth, for the log."""
    return round((end - start) * 1000, 1)


class NoAnswer(Refusal):
    """No worker answered within FR_REQUEST_TIMEOUT."""

    status = 504


class GaveUp(Refusal):
    """The workers failed on the image repeatedly: SQS moved its request to the dead-letter queue."""

    status = 502


class NotRecognized(Refusal):
    """The worker answered with an error (not an image, no face, ...): its reason."""

    status = 422


def upload_key(request_id, filename):
    """(stem, S3 key) for an uploaded file name: the client never chooses the key.

    The stem is the file name without directories or extension, reduced to [A-Za-z0-9._-].
    """
    base = re.split(r"[/\\]", filename or "")[-1]
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip(".")[:MAX_STEM_CHARS] or "upload"
    ext = f".{ext.lower()}" if re.fullmatch(r"[A-Za-z0-9]{1,5}", ext) else ""
    return stem, f"{request_id}/{stem}{ext}"


def sha256_of(body):
    body.seek(0)
    return sha256_hex(body)


class Uploads:
    """Upload, enqueue, wait, answer: `recognize`."""

    def __init__(self, config, s3, sqs, request_url, reply_url, replies, table=None):
        self.config = config
        self.s3 = s3
        self.sqs = sqs
        self.request_url = request_url
        self.reply_url = reply_url
        self.replies = replies
        self.table = table  # a results.ResultsTable, or None

    def recognize(self, filename, body):
        """(`stem:name`, the worker's model milliseconds or None) for an uploaded image."""
        request_id = uuid.uuid4().hex
        stem, key = upload_key(request_id, filename)
        started = time.monotonic()
        digest = sha256_of(body) if self.table else None
        # Before the request counts as waiting: the autoscaler starts no instance for an answer at hand.
        if digest and (name := self.table.lookup(stem, digest)):
            self._store(key, body)
            log.info(
                "answered", id=request_id, stem=stem, result=name, source="table", ms=milliseconds(started, time.monotonic())
            )
            return f"{stem}:{name}", None
        try:
            return self._ask(request_id, key, stem, body, digest, started)
        except Refusal:  # an upload answered with an error (422, 502, 504) is not kept
            self._discard(key)
            raise

    def _ask(self, request_id, key, stem, body, digest, started):
        """Store the upload, send its request and wait for the reply: (`stem:name`, model ms)."""
        with self.replies.waiting(request_id) as slot:
            self._store(key, body)
            stored = time.monotonic()
            message = encode(Request(request_id, key, stem, self.reply_url))
            self.sqs.send_message(
                QueueUrl=self.request_url, MessageBody=message, MessageAttributes=deadline_attribute(self.config.request_timeout)
            )
            queued = slot.queued = time.monotonic()
            if not slot.event.wait(self.config.request_timeout):
                log.warning("timeout", id=request_id, stem=stem)
                raise NoAnswer(f"no answer within {self.config.request_timeout:g} s")
        outcome = slot.outcome
        if isinstance(outcome, DeadLettered):
            raise GaveUp("the image could not be processed (the worker failed on it repeatedly)")
        answered = time.monotonic()
        log.info(
            "answered",
            id=request_id,
            stem=stem,
            result=outcome.name,
            error=outcome.error,
            ms=milliseconds(started, answered),
            model_ms=outcome.model_ms,
            put_ms=milliseconds(started, stored),
            send_ms=milliseconds(stored, queued),
            wait_ms=milliseconds(queued, answered),
        )
        if outcome.error:
            raise NotRecognized(outcome.error)
        if digest and outcome.model:
            self.table.record(stem, digest, outcome.name, outcome.model)
        return f"{stem}:{outcome.name}", outcome.model_ms

    def _discard(self, key):
        """Remove an upload from the input bucket (best-effort: the bucket's lifecycle rule removes
        what this cannot)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.s3.delete_object(Bucket=self.config.in_bucket, Key=key)
        except (BotoCoreError, ClientError) as e:
            log.warning("discard_failed", key=key, error=e)

    def _store(self, key, body):
        """The upload, into the input bucket (also when the table answers it: the bucket holds every upload)."""
        body.seek(0)
        self.s3.put_object(Bucket=self.config.in_bucket, Key=key, Body=body)
