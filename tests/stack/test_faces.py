"""Every face of an upload as JSON, and strangers named `unknown` (FR_MATCH_THRESHOLD), through the web
tier and a worker (the model's side alone: tests/unit/test_model.py)."""

import json
import shutil
import tempfile
import unittest
from pathlib import Path

from model import Gallery
from tests.support import (
    IMAGES,
    Service,
    expected_answers,
    group_photo,
    image_bytes,
    multipart,
    request,
    stand_in_files,
    upload,
)

# Under stand-in weights (docs/api.md#strangers): an image enrolled is ~1e-7 from its entry, a face cut
# from a group photo ~1e-4, and different people 1.6e-3 apart or more.
THRESHOLD = 0.001
STRANGER = "Paul"  # left out of this gallery


def image(stem):
    return (IMAGES / f"{stem}.jpg").read_bytes()


class FacesTest(Service, unittest.TestCase):
    """A web tier with FR_MATCH_THRESHOLD, a worker, and a gallery without STRANGER."""

    @classmethod
    def setUpClass(cls):
        scratch = Path(tempfile.mkdtemp(prefix="faces-model-"))
        cls.addClassCleanup(shutil.rmtree, scratch)
        weights, gallery_path = stand_in_files()
        gallery = Gallery.load(gallery_path)
        known = [i for i, name in enumerate(gallery.names) if name != STRANGER]
        strangerless = scratch / "gallery.pt"
        Gallery(gallery.embeddings[known], tuple(gallery.names[i] for i in known)).save(strangerless)
        cls.start_service(workers=1, model=(weights, strangerless), FR_MATCH_THRESHOLD=THRESHOLD)
        cls.expected = expected_answers()
        cls.stranger = next(stem for stem, name in sorted(cls.expected.items()) if name == STRANGER)
        cls.known = next(stem for stem, name in sorted(cls.expected.items()) if name not in (STRANGER, "unknown"))

    def upload_json(self, filename, data, url=None):
        status, body = upload(url or f"{self.url}?format=json", filename, data)
        return status, json.loads(body)

    def test_someone_not_in_the_gallery_is_unknown_in_text_and_json_and_someone_in_it_is_named(self):
        self.assertEqual(upload(self.url, "stranger.jpg", image(self.stranger)), (200, "stranger:unknown\n"))
        self.assertEqual(upload(self.url, "known.jpg", image(self.known)), (200, f"known:{self.expected[self.known]}\n"))
        status, answer = self.upload_json("stranger.jpg", image(self.stranger))
        self.assertEqual((status, answer["file"], answer["name"]), (200, "stranger", "unknown"))
        (face,) = answer["faces"]
        self.assertEqual(face["name"], "unknown")
        self.assertGreater(face["distance"], THRESHOLD)

    def test_a_group_photos_json_answer_lists_every_face_largest_first_with_a_box_inside_the_image(self):
        stems = ["test_01", "test_07"]
        data, _, (width, height) = group_photo(stems)
        status, answer = upload(self.url, "group.jpg", data, headers={"Accept": "text/html, application/json;q=0.9"})
        self.assertEqual(status, 200)
        answer = json.loads(answer)
        self.assertEqual(sorted(face["name"] for face in answer["faces"]), sorted(self.expected[s] for s in stems))
        self.assertEqual(answer["name"], answer["faces"][0]["name"])
        areas = []
        for face in answer["faces"]:
            x1, y1, x2, y2 = face["box"]
            self.assertTrue(0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, face["box"])
            self.assertTrue(0.9 < face["probability"] <= 1 and 0 <= face["distance"] <= THRESHOLD, face)
            areas.append((x2 - x1) * (y2 - y1))
        self.assertEqual(areas, sorted(areas, reverse=True))
        text = upload(self.url, "group.jpg", data)
        self.assertEqual(text, (200, f"group:{answer['name']}\n"), "the text answer is the first face's")

    def test_without_an_admin_key_the_gallery_can_be_read_but_not_changed(self):
        status, listing = request(f"{self.url}people", "GET")
        self.assertEqual(status, 200)
        self.assertNotIn(STRANGER, {p["name"] for p in json.loads(listing)["people"]})
        content_type, body = multipart([("inputFile", "p.jpg", image(self.stranger))])
        for method, data, headers in [
            ("POST", body, {"Content-Type": content_type, "Authorization": "Bearer " + "k" * 24}),
            ("DELETE", b"", {"Authorization": "Bearer " + "k" * 24}),
        ]:
            with self.subTest(method):
                status, answer = request(f"{self.url}people/{STRANGER}", method, data, headers)
                self.assertEqual(status, 403)
                self.assertIn("changes to the gallery are off", json.loads(answer)["error"])
        self.assertEqual(request(f"{self.url}people", "GET"), (200, listing))

    def test_a_refusal_asked_for_in_json_is_json_with_the_same_status(self):
        blank = image_bytes((200, 200))
        self.assertEqual(upload(self.url, "blank.jpg", blank), (422, "no face found in the image\n"))
        self.assertEqual(self.upload_json("blank.jpg", blank), (422, {"error": "no face found in the image"}))
        self.assertEqual(
            upload(f"{self.url}?format=xml", "a.jpg", image(self.known)),
            (400, "POST / takes no query but ?format=json or ?format=text\n"),
        )
        status, body = upload(f"{self.url}?format=text", "a.jpg", image(self.known), headers={"Accept": "application/json"})
        self.assertEqual((status, body), (200, f"a:{self.expected[self.known]}\n"), "?format= decides over Accept")


if __name__ == "__main__":
    unittest.main()
