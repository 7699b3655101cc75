"""The model library on its own: weight files, galleries, batches, bad images."""
import subprocess
import tempfile
import unittest
from pathlib import Path

import torch
from facenet_pytorch import InceptionResnetV1

from model import BadImage, Gallery, NoFace, Recognizer, load_weights
from tests.support import FIXTURES, IMAGES, LABELS, PYTHON, child_env, expected_answers, image_bytes, stand_in_files


class WeightsTest(unittest.TestCase):
    def test_a_vggface2_format_state_dict_loads_without_its_classifier_and_without_the_stand_in_warning(self):
        # The published file is InceptionResnetV1's state dict with an 8631-class `logits` layer.
        published = InceptionResnetV1(classify=True, num_classes=8631).state_dict()
        self.assertIn("logits.weight", published)
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch, "20180402-114759-vggface2.pt")
            torch.save(published, path)
            with self.assertNoLogs("model.recognizer", "WARNING"):
                net, stand_in = load_weights(path)
        self.assertFalse(stand_in)
        self.assertTrue(torch.equal(net.state_dict()["last_linear.weight"], published["last_linear.weight"]))
        self.assertFalse(net.training)

    def test_stand_in_weights_say_so_loudly(self):
        weights, _ = stand_in_files()
        with self.assertLogs("model.recognizer", "WARNING") as logged:
            _, stand_in = load_weights(weights)
        self.assertTrue(stand_in)
        self.assertIn("STAND-IN WEIGHTS", logged.output[0])

    def test_a_file_that_is_not_these_weights_is_refused(self):
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch, "other.pt")
            torch.save({"conv.weight": torch.zeros(1)}, path)
            with self.assertRaises(RuntimeError):
                load_weights(path)


class RecognizerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.recognizer = Recognizer(*stand_in_files(), threads=1)
        cls.expected = expected_answers()

    def test_the_reference_gallery_loads(self):
        gallery = Gallery.load(FIXTURES / "data.pt")
        self.assertEqual(tuple(gallery.embeddings.shape), (len(gallery.names), 512))
        name, distance = gallery.nearest(gallery.embeddings[3])
        self.assertEqual((name, distance), (gallery.names[3], 0.0))

    def test_a_batch_gives_each_image_its_own_answer_or_error(self):
        stems = ["test_00", "test_01", "test_02", "test_07"]
        images = [(IMAGES / f"{s}.jpg").read_bytes() for s in stems]
        results = self.recognizer.recognize_batch(images[:2] + [b"junk", image_bytes((64, 64)), image_bytes((90, 70))]
                                                  + images[2:])
        self.assertEqual(results[:2] + results[5:], [self.expected[s] for s in stems])
        self.assertIsInstance(results[2], BadImage)
        self.assertIsInstance(results[3], NoFace)
        self.assertIsInstance(results[4], NoFace)

    def test_decompression_bombs_are_refused_before_decoding(self):
        with self.assertRaisesRegex(BadImage, "too large"):
            self.recognizer.recognize(image_bytes((6000, 6000), kind="PNG"))

    def test_enrol_command_builds_a_gallery_the_recognizer_uses(self):
        weights, _ = stand_in_files()
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(scratch, "gallery.pt")
            subprocess.run([PYTHON, "-m", "model", "enroll", "--weights", str(weights), str(IMAGES), str(LABELS),
                            str(out)], env=child_env(), check=True, capture_output=True, timeout=300)
            gallery = Gallery.load(out)
            self.assertEqual(sorted(set(gallery.names)), sorted(set(self.expected.values())))
            recognizer = Recognizer(weights, out, threads=1)
            self.assertEqual(recognizer.recognize((IMAGES / "test_08.jpg").read_bytes()), self.expected["test_08"])


if __name__ == "__main__":
    unittest.main()
