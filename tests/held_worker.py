"""worker.py whose model holds each batch until the file FLAG exists: a test that starts it knows
the worker is mid-image from its `event=received` line for as long as it wants (and, killing or
freezing it there, without a race). `python -m tests.held_worker FLAG`, with worker.py's FR_*."""

import sys
import threading
from pathlib import Path

import worker


def held(load_recognizer, flag):
    """load_recognizer, its recognizer holding every batch until `flag` exists."""

    def load(config):
        recognizer = load_recognizer(config)
        identify_batch = recognizer.identify_batch

        def identify_when_let(images, every=None, gallery=None):
            while not flag.exists():
                threading.Event().wait(0.05)
            return identify_batch(images, every, gallery)

        recognizer.identify_batch = identify_when_let
        return recognizer

    return load


if __name__ == "__main__":
    worker.load_recognizer = held(worker.load_recognizer, Path(sys.argv[1]))
    sys.exit(worker.main([]))
