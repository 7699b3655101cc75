"""The model library on its own: weight files, galleries, batches, bad images."""

import io
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path
from unittest import mock

import numpy
import torch
from facenet_pytorch import InceptionResnetV1
from PIL import Image

import worker
from core import settings
from model import BadImage, Gallery, ModelError, NoFace, Recognizer, TooManyFaces, load_weights
from model.files import file_sha256
from model.recognizer import MAX_SIDE, decode_image
from tests.support import (
    FIXTURES,
    IMAGES,
    LABELS,
    PYTHON,
    child_env,
    expected_answers,
    group_photo,
    image_bytes,
    scan_bomb,
    stand_in_files,
)


class OpenedFiles:
    """The paths opened inside a `with` block, by anyone (torch too): the "open" audit event (PEP
    578) of every open(). A hook cannot be removed: one is added once, and records only in a block."""

    recording = None
    hooked = False

    def __enter__(self):
        if not OpenedFiles.hooked:
            sys.addaudithook(OpenedFiles.hook)
            OpenedFiles.hooked = True
        OpenedFiles.recording = []
        return OpenedFiles.recording

    def __exit__(self, *exc):
        OpenedFiles.recording = None

    @staticmethod
    def hook(event, args):
        if event == "open" and OpenedFiles.recording is not None:
            OpenedFiles.recording.append(str(args[0]))


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

    def test_a_worker_reads_its_weights_file_once_and_knows_its_sha256(self):
        weights, _ = stand_in_files()
        with OpenedFiles() as opened:
            recognizer = worker.load_recognizer(settings.load_config({"FR_WEIGHTS": str(weights), "FR_TORCH_THREADS": "1"}))
        self.assertEqual(opened.count(str(weights)), 1, "the weights file read more than once")
        self.assertEqual(recognizer.weights_sha256, file_sha256(weights))

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
        results = self.recognizer.recognize_batch(
            images[:2] + [b"junk", image_bytes((64, 64)), image_bytes((90, 70))] + images[2:]
        )
        self.assertEqual(results[:2] + results[5:], [self.expected[s] for s in stems])
        self.assertIsInstance(results[2], BadImage)
        self.assertIsInstance(results[3], NoFace)
        self.assertIsInstance(results[4], NoFace)

    def test_a_tiny_image_is_its_own_error_and_its_batch_is_answered(self):
        # MTCNN raises on an image smaller than its first network's window, failing the whole batch.
        good = (IMAGES / "test_00.jpg").read_bytes()
        for size in [(1, 1), (3, 5), (12, 12), (19, 400)]:
            with self.subTest(size=size):
                results = self.recognizer.recognize_batch([image_bytes(size, kind="PNG"), good, good, good])
                self.assertIsInstance(results[0], BadImage)
                self.assertIn("too small", str(results[0]))
                self.assertEqual(results[1:], [self.expected["test_00"]] * 3)

    def test_a_model_failure_on_one_image_stays_that_images(self):
        detect = self.recognizer.detect

        def fails_on_odd_sizes(images):
            if any(image.size == (65, 65) for image in images):
                raise RuntimeError("detector bug")
            return detect(images)

        good = (IMAGES / "test_00.jpg").read_bytes()
        odd = encoded(Image.open(IMAGES / "test_01.jpg").resize((65, 65)))
        with (
            mock.patch.object(self.recognizer, "detect", side_effect=fails_on_odd_sizes),
            self.assertLogs("model.recognizer", "ERROR"),
        ):
            results = self.recognizer.recognize_batch([odd, good, odd])
        self.assertEqual(results[1], self.expected["test_00"])
        for result in (results[0], results[2]):
            self.assertIsInstance(result, ModelError)
            self.assertIn("model failed", str(result))

    def test_every_face_of_a_group_photo_is_named_largest_first_with_its_box_in_the_uploads_pixels(self):
        stems = ["test_00", "test_07", "test_02"]
        data, within, size = group_photo(stems)
        alone = (IMAGES / "test_01.jpg").read_bytes()
        every, largest, single = self.recognizer.identify_batch([data, data, alone], [True, False, True])
        self.assertEqual(sorted(face.name for face in every), sorted(self.expected[s] for s in stems))
        areas = [(x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in (face.box for face in every)]
        self.assertEqual(areas, sorted(areas, reverse=True), "largest first")
        self.assertEqual(largest, every[:1], "only the largest face unless every face is asked for")
        self.assertEqual([face.name for face in single], [self.expected["test_01"]])
        for face in every:
            x1, y1, x2, y2 = within[[self.expected[s] for s in stems].index(face.name)]
            self.assertTrue(all(isinstance(v, int) for v in face.box))
            self.assertTrue(x1 <= face.box[0] < face.box[2] <= x2 and y1 <= face.box[1] < face.box[3] <= y2, face.box)
            self.assertGreater(face.probability, 0.9)
        self.assertEqual(self.recognizer.recognize_batch([data]), [every[0].name])
        # Decoded at 1/4 scale (past MAX_SIDE wide): the boxes are still in the upload's pixels, each
        # within its face (names aside: stand-in weights name a face 10 times larger otherwise).
        large, large_within, large_size = group_photo(stems, gap=100, scale=10)
        self.assertGreater(large_size[0], 2 * MAX_SIDE)
        (faces,) = self.recognizer.identify_batch([large], [True])
        self.assertEqual(len(faces), len(stems))
        lefts = sorted(face.box for face in faces)
        for box, (x1, y1, x2, y2) in zip(lefts, large_within):
            self.assertTrue(x1 <= box[0] < box[2] <= x2 and y1 <= box[1] < box[3] <= y2, (box, x1, x2))
            self.assertGreater(box[2] - box[0], (x2 - x1) / 3, "a box the size of the face, not of the decoded image's")

    def test_more_faces_than_the_limit_refuse_the_image_only_when_every_face_is_asked_for(self):
        data, _, _ = group_photo(["test_00", "test_07", "test_02"])
        recognizer = Recognizer.__new__(Recognizer)
        recognizer.__dict__.update(self.recognizer.__dict__, max_faces=2)
        every, largest = recognizer.identify_batch([data, data], [True, False])
        self.assertIsInstance(every, TooManyFaces)
        self.assertEqual(str(every), "too many faces: 3 (limit 2)")
        self.assertEqual(len(largest), 1)

    def test_images_as_phones_and_cameras_make_them_are_named(self):
        face = Image.open(IMAGES / "test_00.jpg")
        exif = Image.Exif()
        exif[0x0112] = 8  # stored turned a quarter anticlockwise; viewers turn it back
        turned = encoded(face.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif.tobytes(), quality=95)
        sixteen_bit = encoded(Image.fromarray(numpy.asarray(face.convert("L")).astype(numpy.uint16) * 257), "PNG")
        self.assertEqual(Image.open(io.BytesIO(sixteen_bit)).mode, "I;16")
        large = face.resize((4800, 4800), Image.Resampling.BICUBIC)
        cases = {
            "EXIF-rotated JPEG": turned,
            "16-bit grey PNG": sixteen_bit,
            "23-megapixel JPEG": encoded(large, "JPEG", quality=90),
            "23-megapixel PNG": encoded(large, "PNG", compress_level=1),
        }
        for name, data in cases.items():
            with self.subTest(name):
                self.assertLessEqual(max(decode_image(data).size), MAX_SIDE)
                self.assertEqual(self.recognizer.recognize(data), self.expected["test_00"])

    def test_decompression_bombs_are_refused_before_decoding(self):
        with self.assertRaisesRegex(BadImage, "too large"):
            self.recognizer.recognize(image_bytes((6000, 6000), kind="PNG"))
        # Under the pixel limit, but 10,000 passes over 16 megapixels: ~20 s of decoding.
        started = time.process_time()
        with self.assertRaisesRegex(BadImage, r"too many JPEG scans: 100\d\d \(limit 100\)"):
            decode_image(scan_bomb(4000, 10_000))
        self.assertLess(time.process_time() - started, 1.0, "refused before it was decoded")
        progressive = encoded(Image.open(IMAGES / "test_00.jpg"), "JPEG", progressive=True)
        self.assertGreater(progressive.count(b"\xff\xda"), 1)
        self.assertEqual(self.recognizer.recognize(progressive), self.expected["test_00"])

    def test_enrol_command_builds_a_gallery_the_recognizer_uses(self):
        weights, _ = stand_in_files()
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(scratch, "gallery.pt")
            subprocess.run(
                [PYTHON, "-m", "model", "enroll", "--weights", str(weights), str(IMAGES), str(LABELS), str(out)],
                env=child_env(),
                check=True,
                capture_output=True,
                timeout=300,
            )
            gallery = Gallery.load(out)
            self.assertEqual(sorted(set(gallery.names)), sorted(set(self.expected.values())))
            recognizer = Recognizer(weights, out, threads=1)
            self.assertEqual(recognizer.recognize((IMAGES / "test_08.jpg").read_bytes()), self.expected["test_08"])


def encoded(image, kind="PNG", **options):
    out = io.BytesIO()
    image.save(out, kind, **options)
    return out.getvalue()


if __name__ == "__main__":
    unittest.main()
