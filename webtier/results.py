"""The results table (FR_RESULTS_TABLE=1): the answers the app tier gave, kept in the DynamoDB table
`{prefix}-dynamoDB` by the image's stem (as the output bucket keeps them), so that the same image
uploaded again under its name is answered at once, without the app tier, also after the web tier
restarts.

An item says what it answers: the sha256 of the image's bytes, and the fingerprint of the model (its
weights file and the gallery's version) that named it. An upload is answered from an item only when
both match the upload's bytes and the model the web tier has now (FR_WEIGHTS, looked at again
whenever the file changes, and the gallery as it is after its last change): new weights, a changed
gallery, or other bytes under the same name, is a miss, answered by the app tier as without a table,
and its answer replaces the item.

Only the web tier touches the table: it looks an upload up before it queues a request, and writes
the item when a worker's answer comes, before the client gets it (a client that has its answers
finds them in the table). The table speeds answers up and is never needed for one: an error asking
or writing it (the table missing, throttled, unreachable) is a miss and one log line, and the table
is then left alone for TABLE_REST seconds, so that requests meanwhile do not each wait for it to fail.
"""

import math
import os
import threading
import time
from pathlib import Path

import common
from core import cloud
from model.files import file_sha256, fingerprint
from webtier.refusals import Refusal

log = common.EventLog("results")

# Seconds the table is not asked after an error.
TABLE_REST = 10.0
# A table call's budget: a request waits this long at most before it goes to the app tier instead.
CONNECT_TIMEOUT = 1
READ_TIMEOUT = 2
ATTEMPTS = 2
# The longest name taken from an item (the gallery's are short); a longer one is a malformed item.
MAX_NAME_CHARS = 200


class ConfiguredModel:
    """The fingerprint of the model the web tier is configured with: its weights file (FR_WEIGHTS,
    hashed again only when it changes: its inode, size or modification time) and the gallery's
    identity now (`gallery()`: webtier/people.py's, changed by every change to the gallery)."""

    def __init__(self, weights, gallery):
        self.path = Path(weights)
        self.gallery = gallery
        self._seen = None
        self._weights = None
        self._lock = threading.Lock()

    def fingerprint(self):
        """OSError if the weights file cannot be read; people.NoGallery while there is no gallery."""
        stat = os.stat(self.path)
        seen = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if seen != self._seen:
                self._weights, self._seen = file_sha256(self.path), seen
            weights = self._weights
        return fingerprint(weights, self.gallery())


def item(stem, sha256, name, distance, model):
    """The table's item for an answer: the gallery's nearest name and its distance (None: not said)."""
    return {
        "stem": {"S": stem},
        "name": {"S": name},
        **({"distance": {"N": repr(float(distance))}} if distance is not None else {}),
        "sha256": {"S": sha256},
        "model": {"S": model},
        "answered": {"S": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    }


def answer_of(found, sha256, model):
    """(name, distance or None) in item `found` if it answers bytes `sha256` under `model`; None for
    anything else: no item, another image or model, or an item not as `item` writes them."""
    if not isinstance(found, dict):
        return None
    text = {key: value.get("S") for key, value in found.items() if isinstance(value, dict)}
    name = text.get("name")
    if text.get("sha256") != sha256 or text.get("model") != model or not isinstance(name, str):
        return None
    if not (0 < len(name) <= MAX_NAME_CHARS and name.isprintable()):
        return None
    return name, distance_of(found.get("distance"))


def distance_of(value):
    """An item's distance, or None where it has none (an item written before distances were kept)."""
    try:
        distance = float(value["N"])
    except (KeyError, TypeError, ValueError):
        return None
    return distance if math.isfinite(distance) and distance >= 0 else None


class ResultsTable:
    """The web tier's side of the table: `lookup` before a request, `record` after an answer."""

    def __init__(self, dynamodb, name, model, clock=time.monotonic):
        self.dynamodb = dynamodb
        self.name = name
        self.model = model  # a ConfiguredModel
        self.clock = clock
        self.hits = 0
        self._resting_until = -math.inf
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config, max_connections, gallery):
        """The table of `config`, asked over up to `max_connections` connections at once; `gallery()`
        the gallery's identity now."""
        dynamodb = cloud.client(
            config, "dynamodb", max_connections, attempts=ATTEMPTS, connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT
        )
        return cls(dynamodb, config.results_table_name, ConfiguredModel(config.weights, gallery))

    def lookup(self, stem, sha256):
        """(name, distance or None) answered before for this stem, these bytes and the configured model, or None."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self._resting():
            return None
        try:
            model = self.model.fingerprint()
            found = self.dynamodb.get_item(TableName=self.name, Key={"stem": {"S": stem}}).get("Item")
        except (BotoCoreError, ClientError, OSError, Refusal) as e:
            self._failed("lookup", e)
            return None
        answer = answer_of(found, sha256, model)
        if answer is not None:
            with self._lock:
                self.hits += 1
        return answer

    def record(self, stem, sha256, name, distance, model):
        """Keep a worker's answer: `name` at `distance` for bytes `sha256`, by the model of fingerprint `model`."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self._resting():
            return
        try:
            self.dynamodb.put_item(TableName=self.name, Item=item(stem, sha256, name, distance, model))
        except (BotoCoreError, ClientError) as e:
            self._failed("record", e)

    def _resting(self):
        return self.clock() < self._resting_until

    def _failed(self, what, error):
        with self._lock:
            if self._resting():
                return
            self._resting_until = self.clock() + TABLE_REST
        log.warning(
            "results_table_unavailable",
            table=self.name,
            call=what,
            error=error,
            detail=f"answers go through the app tier; the table is asked again in {TABLE_REST:g} s",
        )
