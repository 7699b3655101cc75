"""facenet-pytorch, imported with only the parts of torchvision it uses.

facenet-pytorch's detector takes two functions from torchvision (`ops.boxes.batched_nms`, and
`transforms.functional.to_tensor`), but importing any module of torchvision runs the package's
`__init__`, which imports all of it: models, datasets, io, and through `ops.roi_align` torch._dynamo.
That was 1.3 s of every worker's start (docs/performance.md), more than the model load. Here the
packages `torchvision`, `torchvision.ops` and `torchvision.transforms` are made as empty packages
on torchvision's own folders, so that the detector's imports run torchvision's own modules for those
two functions (and `torchvision.extension`, which loads the C++ operators nms runs on), and nothing
else: the same code, so the same answers (test_model checks both).

Where torchvision was imported before (a test, a tool), the real package is used as it is.
"""

import importlib.util
import sys
import types

import torch

PARTS = ("ops", "transforms")  # the subpackages facenet-pytorch imports from, made empty
USED = ("torchvision.extension", "torchvision.ops.boxes", "torchvision.transforms.functional")


def _empty_package(name, parent=None):
    """The package `name` as a module with its folder but without running its __init__."""
    spec = importlib.util.find_spec(name)
    package = types.ModuleType(name)
    package.__spec__, package.__file__, package.__path__ = spec, spec.origin, list(spec.submodule_search_locations)
    sys.modules[name] = package
    if parent is not None:
        setattr(parent, name.rsplit(".", 1)[1], package)
    return package


def _torchvision_parts():
    if "torchvision" in sys.modules:
        return
    top = _empty_package("torchvision")
    top._is_tracing = torch._C._get_tracing_state  # as torchvision/__init__.py defines it; boxes.py asks
    for part in PARTS:
        _empty_package(f"torchvision.{part}", top)
    for name in USED:
        importlib.import_module(name)


_torchvision_parts()

from facenet_pytorch import MTCNN, InceptionResnetV1, extract_face, fixed_image_standardization  # noqa: E402

__all__ = ["MTCNN", "InceptionResnetV1", "extract_face", "fixed_image_standardization"]
