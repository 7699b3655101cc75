"""Face recognition library: detect the face in an image and name it from a gallery.

It knows nothing about AWS, queues or the service's configuration and logging: bytes in, a name
out; it logs through the standard `logging` module. `model.files` (no torch) hashes its files.
`worker.py` wraps it; `python -m model` runs it from the command line (see `model/__main__.py`).

Detection is facenet-pytorch's MTCNN (its P/R/O-Net weights ship inside the package); the embedding
is InceptionResnetV1. Its VGGFace2 weights come from a file (FR_WEIGHTS). Where that file cannot be
had (no internet on the build machines) `make_stand_in` writes deterministic seeded-random weights
and a gallery enrolled with them, so answers stay checkable end to end; loading such a file logs a
loud warning.
"""

import importlib

# Loaded on first use (PEP 562), so that `model.files` is had without torch.
_RECOGNIZER = (
    "BadImage",
    "Face",
    "Gallery",
    "ModelError",
    "NoFace",
    "Recognizer",
    "TooManyFaces",
    "enroll",
    "load_weights",
    "make_stand_in",
)
__all__ = list(_RECOGNIZER)


def __getattr__(name):
    if name in _RECOGNIZER:
        return getattr(importlib.import_module("model.recognizer"), name)
    raise AttributeError(f"module 'model' has no attribute {name!r}")
