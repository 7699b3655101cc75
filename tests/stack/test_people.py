"""People over HTTP (webtier/people.py, core/gallery.py): examples added and removed with the admin key,
answered from the changed gallery by every worker, through the results table too."""

import io
import json
import re
import struct
import subprocess
import unittest

from PIL import Image, ImageOps

from core import settings
from core.gallery import GalleryStore
from tests.support import (
    IMAGES,
    PYTHON,
    Service,
    aws,
    child_env,
    expected_answers,
    group_photo,
    image_bytes,
    multipart,
    request,
    upload,
    wait_until,
)

KEY = "k" * 24
NEWCOMER = "Zoë Example-Smith"  # percent-encoded in the URL, UTF-8
URL_NAME = "Zo%C3%AB%20Example-Smith"


def mirrored(stem):
    """A fixture image mirrored: a face the gallery does not have (under stand-in weights its
    nearest entry is the fixture's person, ~1e-3 away)."""
    out = io.BytesIO()
    ImageOps.mirror(Image.open(IMAGES / f"{stem}.jpg")).save(out, "JPEG", quality=95)
    return out.getvalue()


class PeopleTest(Service, unittest.TestCase):
    """A web tier with FR_ADMIN_TOKEN and FR_RESULTS_TABLE=1, and two workers started before any change."""

    @classmethod
    def setUpClass(cls):
        cls.start_service(workers=2, FR_ADMIN_TOKEN=KEY, FR_RESULTS_TABLE=1)
        cls.expected = expected_answers()
        cls.people_url = f"{cls.url}people"

    def change(self, method, name, files=(), key=KEY):
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        body = b""
        if files:
            content_type, body = multipart([("inputFile", filename, data) for filename, data in files])
            headers["Content-Type"] = content_type
        status, text = request(f"{self.people_url}/{name}", method, body, headers)
        return status, json.loads(text)

    def people(self):
        status, text = request(self.people_url, "GET")
        self.assertEqual(status, 200)
        return {p["name"]: p["examples"] for p in json.loads(text)["people"]}

    def test_a_person_added_is_answered_by_every_worker_and_through_the_table_and_removed_the_old_answer_comes_back(self):
        examples = [("z1.jpg", mirrored("test_00")), ("z2.jpg", mirrored("test_02"))]
        before = self.people()
        # Answered (and recorded in the table) before the change: the old answer is the nearest fixture person's.
        before_probe = [worker.count for worker in self.workers]
        self.assertEqual(upload(self.url, "probe.jpg", examples[0][1]), (200, f"probe:{self.expected['test_00']}\n"))
        # The probe's batch logs `done` after its answer: waited for, so that it is not taken for a later one's.
        wait_until(lambda: self.done_since(before_probe), 10, what="the probe's batch done")
        # Marked before the change: a worker may load the new gallery at once, before the next line
        # (the change's example images are embedded by the workers too: their lines are not the probes').
        marks = [worker.count for worker in self.workers]
        self.assertEqual(self.change("POST", URL_NAME, examples), (201, {"name": NEWCOMER, "added": 2, "examples": 2}))
        self.assertEqual(self.people(), {**before, NEWCOMER: 2})
        uploads = [upload(self.url, "probe.jpg", data) for _ in range(4) for _, data in examples]
        self.assertEqual(uploads, [(200, f"probe:{NEWCOMER}\n")] * 8)
        answered = 0
        for worker, mark in zip(self.workers, marks):
            lines = [line for line in worker.since(mark)[1] if "event=" in line]
            events = [re.search(r"event=(\w+)", line)[1] for line in lines]
            first = next((n for n, line in enumerate(lines) if "event=done" in line and "stem=probe " in line), None)
            if first is not None:
                answered += 1
                self.assertIn("gallery_loaded", events[:first], "answered before loading the new gallery")
        self.assertGreaterEqual(answered, 1)
        status, answer = upload(f"{self.url}?format=json", "probe.jpg", examples[1][1])
        self.assertEqual((status, json.loads(answer)["faces"][0]["name"]), (200, NEWCOMER))
        self.assertEqual(self.change("DELETE", URL_NAME), (200, {"name": NEWCOMER, "removed": 2}))
        self.assertEqual(self.people(), before)
        self.assertEqual(upload(self.url, "probe.jpg", examples[0][1]), (200, f"probe:{self.expected['test_00']}\n"))
        self.assertEqual(self.change("DELETE", URL_NAME), (404, {"error": f"no one called {NEWCOMER} in the gallery"}))
        examples_left = aws(self.endpoint, "s3").list_objects_v2(Bucket=self.config.gallery_bucket, Prefix="examples/")
        self.assertEqual(examples_left.get("KeyCount"), 0, "a removed person's images stay")

    def done_since(self, marks):
        return any("event=done" in line for worker, mark in zip(self.workers, marks) for line in worker.since(mark)[1])

    def test_the_gallery_embedded_again_keeps_its_people_and_the_web_tier_and_workers_follow_it(self):
        self.assertEqual(self.change("POST", "Rita", [("r1.jpg", mirrored("test_04"))])[0], 201)
        self.addCleanup(self.change, "DELETE", "Rita")
        store = GalleryStore(aws(self.endpoint, "s3"), self.config.gallery_bucket)
        before, _ = store.current()
        # The operator's command (the operator's credentials), with the same weights here: the same embeddings.
        operator = child_env(
            FR_PREFIX=self.config.prefix, FR_ENDPOINT_URL=self.endpoint, FR_WEIGHTS=self.weights, FR_GALLERY=self.gallery
        )
        done = subprocess.run(
            [PYTHON, "-m", "tools.reembed"], env=operator, cwd=settings.PROJECT_DIR, capture_output=True, text=True, timeout=300
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn(f"published   version {before.version + 1}", done.stdout)
        after, _ = store.current()
        self.assertEqual(after.version, before.version + 1)
        self.assertEqual(dict(map(dict.values, after.listing())), dict(map(dict.values, before.listing())))
        ((old,), (new,)) = before.examples("Rita"), after.examples("Rita")
        self.assertEqual(new.image, old.image)
        floats = [struct.unpack("<512f", e.embedding) for e in (old, new)]
        self.assertLess(max(abs(a - b) for a, b in zip(*floats)), 1e-5)
        listed = lambda: json.loads(request(self.people_url, "GET")[1])["version"] == after.version  # noqa: E731
        wait_until(listed, 15, interval=0.5, what="the web tier on the new version")
        marks = [worker.count for worker in self.workers]
        self.assertEqual(upload(self.url, "probe.jpg", mirrored("test_04")), (200, "probe:Rita\n"))
        loaded = [line for worker, mark in zip(self.workers, marks) for line in worker.since(mark)[1] if "gallery_loaded" in line]
        self.assertTrue(loaded and f"version={after.version}" in loaded[0], loaded)

    def test_a_wrong_key_or_none_changes_nothing(self):
        before = self.people()
        files = [("z.jpg", mirrored("test_01"))]
        for key in (None, "wrong" * 5, KEY[:-1], f"{KEY}x", f"x{KEY}"):
            with self.subTest(key=key):
                status, body = self.change("POST", "Mallory", files, key=key)
                self.assertEqual((status, set(body)), (401, {"error"}))
                self.assertEqual(self.change("DELETE", "Paul", key=key)[0], 401)
        self.assertEqual(self.people(), before)

    def test_an_example_with_two_faces_or_none_refuses_the_whole_change(self):
        before = self.people()
        group, _, _ = group_photo(["test_01", "test_07"])
        status, body = self.change("POST", "Crowd", [("one.jpg", mirrored("test_03")), ("two.jpg", group)])
        self.assertEqual((status, body), (422, {"error": "example 2 (two.jpg): an example shows one face: 2 found"}))
        status, body = self.change("POST", "Blank", [("blank.jpg", image_bytes((200, 200)))])
        self.assertEqual((status, body), (422, {"error": "example 1 (blank.jpg): no face found in the image"}))
        self.assertEqual(self.people(), before)

    def test_names_and_limits_are_refused_with_their_reason(self):
        files = [("z.jpg", mirrored("test_01"))]
        for name, why in [
            ("unknown", "what a stranger is called"),
            ("a%2Fb", "letters, digits"),
            ("x" * 65, "1 to 64 characters"),
            ("%20Lead", "letters, digits"),
            ("%FF%FE", "letters, digits"),
        ]:
            with self.subTest(name=name):
                status, body = self.change("POST", name, files)
                self.assertEqual(status, 400)
                self.assertIn(why, body["error"])
        status, body = self.change("POST", "Many", [(f"{n}.jpg", mirrored("test_01")) for n in range(11)])
        self.assertEqual((status, body), (413, {"error": "too many inputFile files: at most 10"}))
        self.assertNotIn("Many", self.people())


if __name__ == "__main__":
    unittest.main()
