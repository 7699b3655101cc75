"""The queue messages: a Request (web tier -> worker) and a Reply (worker -> web tier), as JSON
text of at most MAX_MESSAGE_BYTES. Images travel through S3, never SQS."""

import dataclasses
import json
from dataclasses import dataclass

# SQS's limit on our request queue (set at provisioning).
MAX_MESSAGE_BYTES = 1024


@dataclass(frozen=True)
class Request:
    """Web tier -> worker: the image of file stem `stem` is in the input bucket under `key`."""

    id: str
    key: str
    stem: str
    reply_to: str


@dataclass(frozen=True)
class Reply:
    """Worker -> web tier, for the image of file stem `stem`: exactly one of `name` (the person's) and
    `error` is set.

    `model_ms` is the worker's time in the model, so the web tier can tell what the plumbing cost;
    `model` the fingerprint of the model that named it (model.files.fingerprint), which the results
    table keeps with the name."""

    id: str
    stem: str
    name: str | None = None
    error: str | None = None
    model_ms: str | None = None
    model: str | None = None


def encode(message):
    """JSON text of a Request or Reply; ValueError if it would not fit an SQS message here."""
    body = json.dumps({k: v for k, v in message.__dict__.items() if v is not None}, separators=(",", ":"))
    if len(body.encode()) > MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {len(body.encode())} bytes exceeds {MAX_MESSAGE_BYTES}")
    return body


def decode(kind, body):
    """A `kind` (Request or Reply) from JSON text; ValueError if it is not one. Fields it does not
    know are left out: a newer sender's (an app image older than the web tier keeps working)."""
    try:
        fields = json.loads(body)
        known = {f.name for f in dataclasses.fields(kind)}
        message = kind(**{k: v for k, v in fields.items() if k in known})
    except (AttributeError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"not a {kind.__name__} message: {e}") from None
    if not all(isinstance(v, (str, type(None))) for v in message.__dict__.values()):
        raise ValueError(f"not a {kind.__name__} message: fields must be strings")
    if kind is Reply and (message.name is None) == (message.error is None):
        raise ValueError("a Reply has exactly one of name and error")
    return message
