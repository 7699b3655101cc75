"""The queue messages: a Request (web tier -> worker) and a Reply (worker -> web tier), as JSON
text of at most MAX_MESSAGE_BYTES. Images travel through S3, never SQS."""

import dataclasses
import json
import time
import typing
from dataclasses import dataclass

# SQS's limit on our request queue (set at provisioning).
MAX_MESSAGE_BYTES = 1024
# ... and on the response queue: a reply may list every face of an image (model.MAX_FACES of them,
# ~150 bytes each with a long name). SQS bills a message per 64 KB, so this costs nothing more.
MAX_REPLY_BYTES = 8192
# A Request's message attribute: when its client stops waiting (epoch milliseconds). An attribute,
# not a field: an app image older than the web tier reads the request all the same. Its name, type
# and value count toward the queue's limit (SendMessage reference), 13 digits for the value.
DEADLINE = "deadline"
DEADLINE_BYTES = len(DEADLINE) + len("Number") + 13
# SQS's clock (SentTimestamp) and a host's may differ a little: a request is taken for one nobody
# waits for (past its deadline, sent before a web tier started) only this much beyond the moment.
CLOCK_MARGIN = 2.0


@dataclass(frozen=True)
class Request:
    """Web tier -> worker: the image of file stem `stem` is in the input bucket under `key`; `faces`:
    name every face in it, not only the largest; `embed`: answer the embedding of its one face (an
    example for the gallery); `gallery`: the gallery's version when it was sent (core/gallery.py), the
    oldest the worker may answer with."""

    id: str
    key: str
    stem: str
    reply_to: str
    faces: bool | None = None
    embed: bool | None = None
    gallery: int | None = None


@dataclass(frozen=True)
class Reply:
    """Worker -> web tier, for the image of file stem `stem`: exactly one of `name` (the gallery's
    nearest to its largest face, at `distance`) and `error` is set. Whether a name that far is a
    stranger's is the web tier's to say (FR_MATCH_THRESHOLD).

    `faces`, when the request asked: every face, largest first, each `{"box": [x1, y1, x2, y2],
    "probability": p, "name": n, "distance": d}` (as_face). `embedding`, when the request asked and
    instead of a name: its face's embedding (512 little-endian float32, base64). `model_ms` is the worker's time in the
    model, so the web tier can tell what the plumbing cost; `model` the fingerprint of the model that
    named it (model.files.fingerprint), which the results table keeps with the name."""

    id: str
    stem: str
    name: str | None = None
    error: str | None = None
    distance: float | None = None
    faces: list | None = None
    embedding: str | None = None
    model_ms: str | None = None
    model: str | None = None


FACE_FIELDS = {"box": list, "probability": float, "name": str, "distance": float}


def as_face(box, probability, name, distance):
    """A face of a Reply, its numbers rounded to what a client can use (a distance to 6 digits:
    stand-in weights put different people ~1e-3 apart)."""
    return {"box": list(box), "probability": round(probability, 4), "name": name, "distance": float(f"{distance:.6g}")}


def encode(message):
    """JSON text of a Request or Reply; ValueError if it would not fit an SQS message here (a
    Request's with its deadline attribute)."""
    body = json.dumps({k: v for k, v in message.__dict__.items() if v is not None}, separators=(",", ":"))
    request = isinstance(message, Request)
    limit = MAX_MESSAGE_BYTES - DEADLINE_BYTES if request else MAX_REPLY_BYTES
    if len(body.encode()) > limit:
        with_attributes = f" ({MAX_MESSAGE_BYTES} with its attributes)" if request else ""
        raise ValueError(f"message of {len(body.encode())} bytes exceeds {limit}{with_attributes}")
    return body


def deadline_attribute(timeout):
    """SendMessage's MessageAttributes for a Request whose client waits `timeout` seconds from now."""
    return {DEADLINE: {"DataType": "Number", "StringValue": str(int((time.time() + timeout) * 1000))}}


def deadline(message):
    """When the client of a received request stops waiting (epoch seconds), or None when its sender
    did not say (a web tier older than this attribute)."""
    value = message.get("MessageAttributes", {}).get(DEADLINE, {}).get("StringValue", "")
    return int(value) / 1000 if value.isdigit() else None


def sent_at(message):
    """When SQS took a received message (its SentTimestamp, epoch seconds), or None when it did not say."""
    stamp = message.get("Attributes", {}).get("SentTimestamp", "")
    return int(stamp) / 1000 if stamp.isdigit() else None


def decode(kind, body):
    """A `kind` (Request or Reply) from JSON text; ValueError if it is not one. Fields it does not
    know are left out: a newer sender's (an app image older than the web tier keeps working)."""
    try:
        fields = json.loads(body)
        known = {f.name for f in dataclasses.fields(kind)}
        message = kind(**{k: v for k, v in fields.items() if k in known})
    except (AttributeError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"not a {kind.__name__} message: {e}") from None
    for field in dataclasses.fields(kind):
        if not _is(getattr(message, field.name), typing.get_args(field.type) or (field.type,)):
            raise ValueError(f"not a {kind.__name__} message: {field.name} is not {field.type}")
    if kind is Reply and sum(v is not None for v in (message.name, message.error, message.embedding)) != 1:
        raise ValueError("a Reply has exactly one of name, embedding and error")
    if kind is Reply and not all(_is_face(face) for face in message.faces or []):
        raise ValueError(f"not a Reply message: a face is not {FACE_FIELDS}")
    return message


def _is(value, types):
    """Whether a JSON value is of one of `types` (an int is a float too; a bool is no number)."""
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types) or (float in types and isinstance(value, int))


def _is_face(face):
    return (
        isinstance(face, dict)
        and face.keys() == FACE_FIELDS.keys()
        and all(_is(face[key], (kind,)) for key, kind in FACE_FIELDS.items())
        and len(face["box"]) == 4
        and all(_is(v, (int,)) for v in face["box"])
    )
