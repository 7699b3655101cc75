"""What the web tier does with an uploaded image, HTTP aside: store it in the input bucket under a
key of our own making (`upload_key`), send the request, wait for the worker's answer (replies.py
delivers it), and, with FR_CACHE_SIZE, answer an image seen before (same sha256) from memory, its
upload and `stem -> name` still written to the buckets after the answer. An outcome other than a
name is one of the exceptions below; web.py maps each to its HTTP status."""
import hashlib
import re
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import common
from messages import Request, encode
from replies import DeadLettered

log = common.EventLog("web")

MAX_STEM_CHARS = 100
READ_CHUNK = 64 * 1024


def milliseconds(start, end):
    """Milliseconds from `start` to `end` (monotonic seconds), to a tenth, for the log."""
    return round((end - start) * 1000, 1)


class NoAnswer(Exception):
    """No worker answered within FR_REQUEST_TIMEOUT."""


class GaveUp(Exception):
    """The workers failed on the image repeatedly: SQS moved its request to the dead-letter queue."""


class NotRecognized(Exception):
    """The worker answered with an error (not an image, no face, ...): its reason."""


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


class ResultCache:
    """Names of images answered before, by the sha256 of their bytes; the `size` most recent."""

    def __init__(self, size):
        self.size = size
        self._names = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    def get(self, digest):
        with self._lock:
            name = self._names.get(digest)
            if name is not None:
                self._names.move_to_end(digest)
                self.hits += 1
            return name

    def put(self, digest, name):
        with self._lock:
            self._names[digest] = name
            self._names.move_to_end(digest)
            while len(self._names) > self.size:
                self._names.popitem(last=False)


def sha256_of(body):
    digest = hashlib.sha256()
    body.seek(0)
    while chunk := body.read(READ_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


class Uploads:
    """Upload, enqueue, wait, answer: `recognize`."""

    def __init__(self, config, s3, sqs, request_url, reply_url, replies):
        self.config = config
        self.s3 = s3
        self.sqs = sqs
        self.request_url = request_url
        self.reply_url = reply_url
        self.replies = replies
        self.cache = ResultCache(config.cache_size) if config.cache_size else None
        # S3 writes of cache hits, done after the answer is sent.
        self.background = ThreadPoolExecutor(4, thread_name_prefix="after-answer")

    def recognize(self, filename, body):
        """(`stem:name`, the worker's model milliseconds) for an uploaded image, once a worker answered."""
        request_id = uuid.uuid4().hex
        stem, key = upload_key(request_id, filename)
        started = time.monotonic()
        digest = sha256_of(body) if self.cache else None
        if digest and (name := self.cache.get(digest)):
            self.background.submit(self._store_cached, key, body, stem, name)
            log.info("answered", id=request_id, stem=stem, result=name, cache="hit", ms=milliseconds(started, time.monotonic()))
            return f"{stem}:{name}", None
        with self.replies.waiting(request_id) as slot:
            body.seek(0)
            self.s3.put_object(Bucket=self.config.in_bucket, Key=key, Body=body)
            stored = time.monotonic()
            message = encode(Request(request_id, key, stem, self.reply_url))
            self.sqs.send_message(QueueUrl=self.request_url, MessageBody=message)
            queued = time.monotonic()
            if not slot.event.wait(self.config.request_timeout):
                log.warning("timeout", id=request_id, stem=stem)
                raise NoAnswer(f"no answer within {self.config.request_timeout:g} s")
        outcome = slot.outcome
        if isinstance(outcome, DeadLettered):
            raise GaveUp("the image could not be processed (the worker failed on it repeatedly)")
        answered = time.monotonic()
        log.info("answered", id=request_id, stem=stem, result=outcome.name, error=outcome.error,
                 ms=milliseconds(started, answered), model_ms=outcome.model_ms, put_ms=milliseconds(started, stored),
                 send_ms=milliseconds(stored, queued), wait_ms=milliseconds(queued, answered))
        if outcome.error:
            raise NotRecognized(outcome.error)
        if digest:
            self.cache.put(digest, outcome.name)
        return f"{stem}:{outcome.name}", outcome.model_ms

    def _store_cached(self, key, body, stem, name):
        """What a worker would have written for this upload: the image, and stem -> name."""
        try:
            body.seek(0)
            self.s3.put_object(Bucket=self.config.in_bucket, Key=key, Body=body)
            self.s3.put_object(Bucket=self.config.out_bucket, Key=stem, Body=name.encode())
        except Exception as e:
            log.warning("cached_store_failed", key=key, error=e)
