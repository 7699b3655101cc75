"""The model in a fresh process, as a worker starts on an app instance: imported with only the parts of
torchvision facenet-pytorch uses (model/facenet.py), and finding and embedding every face exactly as
with the whole of torchvision, which this test's own process imports first to compare.

This module imports neither torch nor the model at its top: the fresh process imports `fresh_faces`
from it."""

import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from tests.support import IMAGES, PYTHON, child_env, group_photo, stand_in_files

# Modules of torchvision's that a worker has no use for, and what importing them pulled in.
UNUSED = ("torchvision.models", "torchvision.datasets", "torchvision.io", "torch._dynamo")
STEMS = ("test_00", "test_07", "test_42", "test_99")


def faces(recognizer, paths):
    """Every face of each image file of `paths` as [box, probability, embedding's hex], exactly."""
    images = [Path(path).read_bytes() for path in paths]
    found = recognizer.embed_batch(images, [True] * len(images), boxes=True)
    return [[[[float(x) for x in box], p, embedding.numpy().tobytes().hex()] for box, p, embedding in f] for f in found]


def fresh_faces(weights, gallery, *paths):
    """In the fresh process: the unused modules it loaded, and faces()."""
    from model import Recognizer

    print(json.dumps({"loaded": [m for m in UNUSED if m in sys.modules], "faces": faces(Recognizer(weights, gallery), paths)}))


class FreshModelTest(unittest.TestCase):
    def test_a_fresh_model_imports_no_unused_torchvision_and_finds_and_embeds_every_face_as_with_all_of_it(self):
        import torchvision  # noqa: F401  (before the model: here it runs on the whole of torchvision)

        from model import Recognizer

        self.assertTrue(set(UNUSED) <= set(sys.modules), "this process must run the model on the whole of torchvision")
        weights, gallery = stand_in_files()
        with tempfile.TemporaryDirectory() as scratch:
            group = Path(scratch) / "group.jpg"
            group.write_bytes(group_photo(STEMS)[0])  # more boxes for the detector's nms to sort out
            paths = [str(IMAGES / f"{stem}.jpg") for stem in STEMS] + [str(group)]
            code = "import sys; from tests.stack.test_model_start import fresh_faces; fresh_faces(*sys.argv[1:])"
            printed = subprocess.run(
                [PYTHON, "-c", code, str(weights), str(gallery), *paths],
                env=child_env(),
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            fresh = json.loads(printed)
            here = faces(Recognizer(weights, gallery), paths)
        self.assertEqual(fresh["loaded"], [])
        self.assertEqual([len(f) for f in here], [1] * len(STEMS) + [len(STEMS)])
        self.assertEqual(fresh["faces"], here)


if __name__ == "__main__":
    unittest.main()
