"""What the web tier does with an uploaded image, HTTP aside: store it in the input bucket under a
key of our own making (`upload_key`), send the request, wait for the worker's answer (webtier/replies.py
delivers it). With FR_RESULTS_TABLE=1 an upload the results table answers (webtier/results.py: same stem,
same bytes, same model) is stored and answered at once, and the table keeps each worker's answer.
An outcome other than a name is one of the exceptions below; web.py maps each to its HTTP status.

Whether a face is a stranger's is said here, not by the worker: a worker answers the gallery's nearest
name and its distance, and past FR_MATCH_THRESHOLD the web tier names it UNKNOWN (so the table keeps
what the model said, and a new threshold needs no new answers)."""

import re
import time
import uuid
from dataclasses import dataclass

import common
from core.messages import Request, deadline_attribute, encode
from model.files import sha256_hex
from webtier.refusals import Refusal
from webtier.replies import DeadLettered

log = common.EventLog("web")

MAX_STEM_CHARS = 100
UNKNOWN = "unknown"


def named(name, distance, threshold):
    """What a face is called: the gallery's nearest `name`, or UNKNOWN when it is farther than
    `threshold` (None: never; a distance not known, from an older worker or table item: farther)."""
    if threshold is None:
        return name
    return name if distance is not None and distance <= threshold else UNKNOWN


@dataclass(frozen=True)
class Answer:
    """An upload's answer: the file's stem, the name of its largest face and, where asked, every face
    (core.messages.as_face, named); `model_ms` the worker's time in the model, None from the table."""

    stem: str
    name: str
    faces: list | None = None
    model_ms: str | None = None

    def text(self):
        """The course's answer: `stem:name`."""
        return f"{self.stem}:{self.name}"

    def json(self):
        return {"file": self.stem, "name": self.name, "faces": self.faces}


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


def safe_name(filename):
    """(stem, extension) of an uploaded file name: the stem without directories or extension, reduced
    to [A-Za-z0-9._-]; the extension (".jpg") lowercased, or "" when it is not 1-5 letters and digits."""
    base = re.split(r"[/\\]", filename or "")[-1]
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", stem).lstrip(".")[:MAX_STEM_CHARS] or "upload"
    return stem, f".{ext.lower()}" if re.fullmatch(r"[A-Za-z0-9]{1,5}", ext) else ""


def upload_key(request_id, filename):
    """(stem, S3 key) for an uploaded file name: the client never chooses the key."""
    stem, ext = safe_name(filename)
    return stem, f"{request_id}/{stem}{ext}"


def sha256_of(body):
    body.seek(0)
    return sha256_hex(body)


class Uploads:
    """Upload, enqueue, wait, answer: `recognize`; `ask` for any request of the app tier."""

    def __init__(self, config, s3, sqs, request_url, reply_url, replies, table=None, gallery_version=lambda: None):
        self.config = config
        self.s3 = s3
        self.sqs = sqs
        self.request_url = request_url
        self.reply_url = reply_url
        self.replies = replies
        self.table = table  # a results.ResultsTable, or None
        self.gallery_version = gallery_version  # stamped on each request (core/gallery.py)

    def recognize(self, filename, body, faces=False):
        """The Answer for an uploaded image; with `faces`, every face in it (the table, which keeps one
        name, is then not asked)."""
        request_id = uuid.uuid4().hex
        stem, key = upload_key(request_id, filename)
        started = time.monotonic()
        threshold = self.config.match_threshold
        digest = sha256_of(body) if self.table else None
        # Before the request counts as waiting: the autoscaler starts no instance for an answer at hand.
        found = self.table.lookup(stem, digest) if digest and not faces else None
        if found and (threshold is None or found[1] is not None):
            self._store(key, body)
            name = named(*found, threshold)
            ms = milliseconds(started, time.monotonic())
            log.info("answered", id=request_id, stem=stem, result=name, source="table", ms=ms)
            return Answer(stem, name)
        request = Request(request_id, key, stem, self.reply_url, faces=faces or None, gallery=self.gallery_version())
        try:
            outcome, times = self.ask(request, body)
        except Refusal:  # an upload answered with an error (422, 502, 504) is not kept
            self.discard(key)
            raise
        name = named(outcome.name, outcome.distance, threshold)
        log.info("answered", id=request_id, stem=stem, result=name, distance=outcome.distance, **times)
        if digest and outcome.model:
            self.table.record(stem, digest, outcome.name, outcome.distance, outcome.model)
        faces = [dict(face, name=named(face["name"], face["distance"], threshold)) for face in outcome.faces or []]
        return Answer(stem, name, faces if request.faces else None, outcome.model_ms)

    def ask(self, request, body):
        """Store the image `body` under the request's key, send the request and wait for the reply:
        (the Reply, where its time went), or NoAnswer, GaveUp, NotRecognized (the worker's error)."""
        started = time.monotonic()
        with self.replies.waiting(request.id) as slot:
            self._store(request.key, body)
            stored = time.monotonic()
            self.sqs.send_message(
                QueueUrl=self.request_url,
                MessageBody=encode(request),
                MessageAttributes=deadline_attribute(self.config.request_timeout),
            )
            queued = slot.queued = time.monotonic()
            if not slot.event.wait(self.config.request_timeout):
                log.warning("timeout", id=request.id, stem=request.stem)
                raise NoAnswer(f"no answer within {self.config.request_timeout:g} s")
        outcome = slot.outcome
        if isinstance(outcome, DeadLettered):
            raise GaveUp("the image could not be processed (the worker failed on it repeatedly)")
        if outcome.error:
            log.info("answered", id=request.id, stem=request.stem, error=outcome.error, model_ms=outcome.model_ms)
            raise NotRecognized(outcome.error)
        answered = time.monotonic()
        return outcome, {
            "ms": milliseconds(started, answered),
            "model_ms": outcome.model_ms,
            "put_ms": milliseconds(started, stored),
            "send_ms": milliseconds(stored, queued),
            "wait_ms": milliseconds(queued, answered),
        }

    def discard(self, key):
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
