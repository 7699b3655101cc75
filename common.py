"""What every process does the same way: logging, one logfmt line per event, and stopping on
SIGTERM/SIGINT."""
import logging
import os
import sys


def logfmt_value(value):
    """`value` as a logfmt field's value: quoted when it holds a space, `=` or a quote."""
    text = str(value)
    if any(c in text for c in ' ="') or not text:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


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
