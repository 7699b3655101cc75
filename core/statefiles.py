"""What processes on one host leave each other in FR_STATE_DIR: small JSON files, written whole.

web.json: the web tier's count of requests waiting for an answer, the autoscaler's exact count of
the work (autoscaler.py), and how many of them have been on the queue for longer than SQS's counts
may lag; written by `write_waiting` at once when the count changes and at least every
WEB_STATE_SECONDS, read by `read_waiting`, which takes a file older than WEB_STATE_MAX_AGE for a
web tier gone. autoscaler.json: the autoscaler's last decision, for the status page. launches.json:
the autoscaler's launches not yet seen (scaling/launching.py Launches). The local
stack's logs are in FR_STATE_DIR/logs (`log_dir`)."""

import json
import os
import time
from pathlib import Path

AUTOSCALER_STATE = "autoscaler.json"
LAUNCHES = "launches.json"
WEB_STATE = "web.json"
# web.json is rewritten at least this often; older than WEB_STATE_MAX_AGE (three misses), it is gone.
WEB_STATE_SECONDS = 1.0
WEB_STATE_MAX_AGE = 3.0


def write_state(config, name, **fields):
    """Leave `fields` (and the time) in FR_STATE_DIR/`name`, written whole, never half."""
    path = Path(config.state_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(dict(fields, at=time.time())))
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
        raise


def read_state(config, name, max_age=None):
    """The fields left in FR_STATE_DIR/`name`, or None when there are none (or, with `max_age`,
    when they are older than that many seconds: their writer is gone)."""
    try:
        fields = json.loads((Path(config.state_dir) / name).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(fields, dict):
        return None
    age = time.time() - fields.get("at", 0)
    # A file dated ahead of the clock (a clock stepped back, a writer whose clock is ahead) is no
    # proof its writer is alive: believed only as far as one write period ahead.
    if max_age is not None and not -WEB_STATE_SECONDS <= age <= max_age:
        return None
    return fields


def write_waiting(config, waiting, long_queued):
    """The web tier: `waiting` requests wait for an answer now, `long_queued` of them with their
    messages on the queue for longer than FR_SQS_COUNT_LAG (SQS's counts show each of them)."""
    write_state(config, WEB_STATE, waiting=waiting, long_queued=long_queued)


def read_waiting(config):
    """The autoscaler: (requests the web tier on this host waits on, how many of them have been
    queued for longer than FR_SQS_COUNT_LAG), or None when no web tier ever ran here (no web.json).
    A web tier gone (its file no longer rewritten, or dated ahead of the clock) waits on nothing:
    (0, 0), so that the requests it left cost no instance while its unit restarts it."""
    if not (Path(config.state_dir) / WEB_STATE).exists():
        return None
    web = read_state(config, WEB_STATE, max_age=WEB_STATE_MAX_AGE)
    return (web["waiting"], web.get("long_queued", 0)) if web else (0, 0)


def log_dir(state_dir):
    """Where the local stack of FR_STATE_DIR `state_dir` logs, its processes and its instances'
    workers: FR_STATE_DIR/logs."""
    return Path(state_dir) / "logs"
