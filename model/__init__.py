"""Face recognition library: detect the face in an image and name it from a gallery.

It knows nothing about AWS or queues: bytes in, a name out. `worker.py` wraps it; `python -m model`
runs it from the command line (see `model/__main__.py`).

Detection is facenet-pytorch's MTCNN (its P/R/O-Net weights ship inside the package); the embedding
is InceptionResnetV1. Its VGGFace2 weights come from a file (FR_WEIGHTS). Where that file cannot be
had (no internet on the build machines) `make_stand_in` writes deterministic seeded-random weights
and a gallery enrolled with them, so answers stay checkable end to end; loading such a file logs a
loud warning.
"""
from model.recognizer import (
    BadImage,
    Gallery,
    ModelError,
    NoFace,
    Recognizer,
    enroll,
    load_weights,
    make_stand_in,
)

__all__ = [
    "BadImage",
    "Gallery",
    "ModelError",
    "NoFace",
    "Recognizer",
    "enroll",
    "load_weights",
    "make_stand_in",
]
