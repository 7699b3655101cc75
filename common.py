"""What every process does the same way: logging, one logfmt line per event, and stopping on
SIGTERM/SIGINT.

Every process logs through an EventLog: `log.info("answered", id=..., ms=12.5)` is the line
`... INFO web event=answered id=... ms=12.5`, each value quoted when it holds a space, `=`, a quote
or a line break, so that one line is one event whatever the values (an error's text, a path)."""

import logging
import os
import sys


def logfmt_value(value):
    """`value` as a logfmt field's value: quoted when it holds a space, `=`, a quote or a line break."""
    text = str(value)
    if any(c in text for c in ' ="\n\r') or not text:
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
        return '"' + escaped + '"'
    return text


class EventLog:
    """The log of one component (its logger's name): one logfmt line per event, `event=NAME` first."""

    def __init__(self, name):
        self.logger = logging.getLogger(name)

    def log(self, level, event, fields, exc_info=False):
        if self.logger.isEnabledFor(level):
            line = " ".join([f"event={event}", *(f"{key}={logfmt_value(value)}" for key, value in fields.items())])
            self.logger.log(level, "%s", line, exc_info=exc_info, stacklevel=3)

    def debug(self, event, **fields):
        self.log(logging.DEBUG, event, fields)

    def info(self, event, **fields):
        self.log(logging.INFO, event, fields)

    def warning(self, event, **fields):
        self.log(logging.WARNING, event, fields)

    def error(self, event, **fields):
        self.log(logging.ERROR, event, fields)

    def exception(self, event, **fields):
        """An error with the traceback of the exception being handled (lines after this one)."""
        self.log(logging.ERROR, event, fields, exc_info=True)


class Failures:
    """A loop's failures, each kind said once (with its traceback when it is no AWS error) until a
    step of the loop succeeds again: a loop that fails every second logs one line, not one a second."""

    def __init__(self, log, event):
        self.log, self.event, self.said = log, event, set()

    def failed(self, error):
        code = getattr(error, "response", {}).get("Error", {}).get("Code")  # an AWS error's (botocore's ClientError)
        kind = f"{type(error).__name__}:{code or getattr(error, 'errno', None) or ''}"
        if kind in self.said:
            return
        self.said.add(kind)
        fields = dict(kind=kind, error=error, detail="said once until it recovers")
        if code or isinstance(error, OSError):
            self.log.warning(self.event, **fields)
        else:
            self.log.exception(self.event, **fields)

    def recovered(self):
        if self.said:
            self.log.info(f"{self.event}_over", kinds=",".join(sorted(self.said)))
            self.said.clear()


def setup_logging(level="INFO"):
    """One line per event to stderr (journald collects it on AWS)."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def stop_on_signals(stop):
    """SIGTERM/SIGINT: the first sets `stop` (finish current work, then exit 0); the second exits now."""
    import signal

    def handle(signum, frame):
        if stop.is_set():
            os._exit(128 + signum)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def quantile(ordered, q):
    """The q-quantile (nearest rank) of sorted values, or None when there are none."""
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 6)
