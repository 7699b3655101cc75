"""The gallery as data (core/gallery.py) and a gallery file read without torch (model.files), alone."""

import struct
import tempfile
import unittest
import zipfile
from pathlib import Path

import torch

from core import gallery
from core.gallery import BadName, Example, Follower, NoGallery, Snapshot, check_name
from model import Gallery
from model.files import GalleryFileError, read_gallery
from tests.support import FIXTURES, stand_in_files


def embedding(value):
    return struct.pack("<512f", *([value] * 512))


class FakeStore:
    def __init__(self, found=None):
        self.found = found
        self.reads = 0
        self.bucket = "b"

    def current(self):
        self.reads += 1
        return self.found


class GalleryTest(unittest.TestCase):
    def test_a_gallery_file_reads_without_torch_as_torch_reads_it(self):
        for path in (FIXTURES / "data.pt", stand_in_files()[1]):
            with self.subTest(path.name):
                names, rows = read_gallery(path)
                loaded = Gallery.load(path)
                self.assertEqual(tuple(names), loaded.names)
                self.assertTrue(torch.equal(Gallery.from_rows(names, rows).embeddings, loaded.embeddings))

    def test_a_file_that_would_run_code_or_is_no_gallery_is_refused(self):
        with tempfile.TemporaryDirectory() as scratch:
            evil = Path(scratch, "evil.pt")
            with zipfile.ZipFile(evil, "w") as archive:
                archive.writestr("evil/data.pkl", b"cos\nsystem\n(S'echo owned'\ntR.")
            other = Path(scratch, "other.pt")
            torch.save({"weights": torch.zeros(3)}, other)
            for path, why in [
                (evil, "os.system"),
                (other, "not a gallery file"),
            ]:
                with self.subTest(path.name), self.assertRaisesRegex(GalleryFileError, why):
                    read_gallery(path)

    def test_a_snapshot_round_trips_and_each_change_is_the_next_version(self):
        seeded = Snapshot.seed(["A", "B", "A"], [embedding(1), embedding(2), embedding(3)])
        self.assertEqual((seeded.version, seeded.listing()), (1, [{"name": "A", "examples": 2}, {"name": "B", "examples": 1}]))
        self.assertEqual(Snapshot.parse(seeded.body()), seeded)
        self.assertEqual(seeded.body(), Snapshot.parse(seeded.body()).body(), "the same gallery is the same bytes")
        added = seeded.with_examples("C", [Example(embedding(4), "examples/C/x.jpg")])
        self.assertEqual((added.version, added.rows()[0]), (2, ["A", "A", "B", "C"]))
        more = added.with_examples("B", [Example(embedding(5))])
        self.assertEqual(more.examples("B"), (Example(embedding(2)), Example(embedding(5))))
        removed = more.without("A")
        self.assertEqual((removed.version, [p["name"] for p in removed.listing()]), (4, ["B", "C"]))
        self.assertNotEqual(gallery.identity(removed.body()), gallery.identity(more.body()))
        for bad in [b"{}", b"not json", b'{"version": "1", "people": []}', seeded.body().replace(b'"A"', b"7")]:
            with self.subTest(bad=bad[:30]), self.assertRaises(ValueError):
                Snapshot.parse(bad)

    def test_names_are_letters_digits_and_a_little_punctuation(self):
        for name in ["Paul", "Zoë Example-Smith", "Anne-Marie O'Neil Jr.", "李小龍", "x" * 64, "R2_D2"]:
            with self.subTest(name=name):
                self.assertEqual(check_name(name), name)
        for name, why in [
            ("", "1 to 64"),
            ("x" * 65, "1 to 64"),
            ("a/b", "letters"),
            (" Paul", "letters"),
            ("Paul  Smith", "letters"),
            ("Unknown", "stranger"),
            ("Paul\n", "letters"),
            ("../x", "letters"),
        ]:
            with self.subTest(name=name), self.assertRaisesRegex(BadName, why):
                check_name(name)
        self.assertEqual(check_name("Zoe\u0308"), "Zoë", "NFC: one name however it is typed")

    def test_a_follower_reads_again_only_for_a_newer_version_than_it_has(self):
        snapshot = Snapshot.seed(["A"], [embedding(1)]).with_examples("B", [Example(embedding(2))])
        store = FakeStore((snapshot, "id2"))
        follower = Follower(store, lambda names, rows: names)
        self.assertTrue(follower.follow())
        self.assertEqual((follower.version, follower.gallery, follower.identity), (2, ["A", "B"], "id2"))
        reads = store.reads
        for wanted in (0, 1, 2):
            self.assertFalse(follower.follow(wanted))
        self.assertEqual(store.reads, reads, "a read for a version it has, or for none asked")
        follower.follow(3)
        self.assertEqual(store.reads, reads + 1)
        with self.assertRaises(NoGallery):
            Follower(FakeStore(None), list).follow()


if __name__ == "__main__":
    unittest.main()
