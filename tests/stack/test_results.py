"""The results table (FR_RESULTS_TABLE=1, webtier/results.py) through the web tier and a worker, across a
change of model (its items alone: tests/unit/test_results_items.py; the course's 2026 run on the
whole local stack: tests/stack/test_first_run.py)."""

import hashlib
import shutil
import tempfile
import unittest
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core.gallery import GalleryStore
from tests.stack.test_people import mirrored
from tests.support import (
    IMAGES,
    Service,
    aws,
    burst,
    expected_answers,
    multipart,
    request,
    stand_in_files,
    table_hits,
    upload,
)
from webtier import results

KEY = "k" * 24


def gallery_identity(service):
    """The identity of the gallery the service's bucket has now."""
    return GalleryStore(aws(service.endpoint, "s3"), service.config.gallery_bucket).current()[1]


def image(stem):
    return (IMAGES / f"{stem}.jpg").read_bytes()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def replace(path, data):
    """Give the file at `path` new contents, as a deployment does (written beside it, renamed over it)."""
    staged = path.with_name(path.name + ".new")
    staged.write_bytes(data)
    staged.replace(path)


def items(dynamodb, table):
    """{stem: {attribute: its string}} of every item of the table."""
    pages = dynamodb.get_paginator("scan").paginate(TableName=table)
    return {i["stem"]["S"]: {k: v.get("S") for k, v in i.items()} for page in pages for i in page["Items"]}


class ResultsTableTest(Service, unittest.TestCase):
    """The web tier with FR_RESULTS_TABLE=1, and a worker."""

    @classmethod
    def setUpClass(cls):
        # Copies of the model files, which a test changes under the running web tier and worker.
        scratch = Path(tempfile.mkdtemp(prefix="results-model-"))
        cls.addClassCleanup(shutil.rmtree, scratch)
        model = [Path(shutil.copy(path, scratch)) for path in stand_in_files()]
        cls.start_service(workers=1, model=model, FR_RESULTS_TABLE=1, FR_ADMIN_TOKEN=KEY)
        cls.dynamodb = aws(cls.endpoint, "dynamodb")
        cls.table = cls.config.results_table_name
        cls.expected = expected_answers()

    @property
    def model(self):
        """The fingerprint of the model now: the weights and the gallery as its bucket has it."""
        return results.fingerprint(results.file_sha256(self.weights), gallery_identity(self))

    def received(self, mark):
        """The stems the worker received since its log's line `mark`."""
        return [line.split("stem=")[1].split()[0] for line in self.workers[0].since(mark)[1] if "event=received" in line]

    def test_an_image_uploaded_again_under_its_name_is_answered_from_the_table_and_stored_again(self):
        stems = [f"test_{n}" for n in range(10, 20)]
        right = [(200, f"{s}:{self.expected[s]}\n") for s in stems]
        self.assertEqual(burst(self.url, stems), right)
        found = items(self.dynamodb, self.table)
        for stem in stems:
            self.assertEqual(
                {k: found[stem][k] for k in ("name", "sha256", "model")},
                {"name": self.expected[stem], "sha256": sha256(image(stem)), "model": self.model},
            )
        hits, mark = table_hits(self.url), self.workers[0].count
        self.assertEqual(burst(self.url, stems), right)
        self.assertEqual(table_hits(self.url), hits + 10)
        self.assertEqual(self.received(mark), [], "the worker was asked")
        keys = self.keys(self.config.in_bucket)
        self.assertEqual(sorted(s for s in stems for k in keys if k.endswith(f"/{s}.jpg")), sorted(stems * 2))

    def test_the_same_name_with_other_bytes_is_answered_anew_and_its_item_replaced(self):
        other = next(s for s in sorted(self.expected) if self.expected[s] != self.expected["test_00"])
        self.assertEqual(upload(self.url, "swap.jpg", image("test_00")), (200, f"swap:{self.expected['test_00']}\n"))
        hits, mark = table_hits(self.url), self.workers[0].count
        self.assertEqual(upload(self.url, "swap.jpg", image(other)), (200, f"swap:{self.expected[other]}\n"))
        self.assertEqual((table_hits(self.url), self.received(mark)), (hits, ["swap"]))
        item = items(self.dynamodb, self.table)["swap"]
        self.assertEqual((item["name"], item["sha256"]), (self.expected[other], sha256(image(other))))

    def test_a_malformed_item_is_a_miss_and_is_replaced(self):
        data = image("test_03")
        good = results.item("odd", sha256(data), "Mallory", 0.0, self.model)
        for n, bad in enumerate(
            [dict(good, name={"N": "7"}), dict(good, name={"S": "Mallory\n"}), {k: v for k, v in good.items() if k != "model"}]
        ):
            stem = f"odd{n}"
            self.dynamodb.put_item(TableName=self.table, Item=dict(bad, stem={"S": stem}))
            with self.subTest(item=bad):
                self.assertEqual(upload(self.url, f"{stem}.jpg", data), (200, f"{stem}:{self.expected['test_03']}\n"))
                self.assertEqual(items(self.dynamodb, self.table)[stem]["name"], self.expected["test_03"])

    def test_new_weights_make_every_answer_a_miss_until_they_are_back(self):
        stems = [f"test_{n}" for n in range(20, 30)]
        right = [(200, f"{s}:{self.expected[s]}\n") for s in stems]
        self.assertEqual(burst(self.url, stems), right)
        hits = table_hits(self.url)
        self.assertEqual(burst(self.url, stems), right)
        self.assertEqual(table_hits(self.url), hits + 10, "the table answers repeats here")
        # The web tier hashes its weights file again when it changes. The worker goes on with the
        # model it loaded (a deployment whose web host has new files, its app tier not yet): its
        # answers are recomputed every time, never taken from items of another model.
        kept = self.weights.read_bytes()
        self.addCleanup(replace, self.weights, kept)  # should the test stop half-way
        replace(self.weights, kept + b"trained again")
        hits, mark = table_hits(self.url), self.workers[0].count
        self.assertEqual(burst(self.url, stems), right)
        self.assertEqual(table_hits(self.url), hits, "an answer of another model was taken")
        self.assertEqual(sorted(self.received(mark)), stems)
        replace(self.weights, kept)
        hits = table_hits(self.url)
        self.assertEqual(burst(self.url, stems), right)
        self.assertEqual(table_hits(self.url), hits + 10, "the model of the items is back")

    def test_a_change_to_the_gallery_makes_every_answer_a_miss_and_new_items_answer_after_it(self):
        stems = [f"test_{n}" for n in range(30, 40)]
        right = [(200, f"{s}:{self.expected[s]}\n") for s in stems]
        self.assertEqual(burst(self.url, stems), right)
        content_type, body = multipart([("inputFile", "new.jpg", mirrored("test_05"))])
        headers = {"Content-Type": content_type, "Authorization": f"Bearer {KEY}"}
        self.assertEqual(request(f"{self.url}people/Newcomer", "POST", body, headers)[0], 201)
        hits, mark = table_hits(self.url), self.workers[0].count
        self.assertEqual(burst(self.url, stems), right)
        self.assertEqual(table_hits(self.url), hits, "an answer of the gallery before the change was taken")
        self.assertEqual(sorted(self.received(mark)), stems)
        self.assertEqual(burst(self.url, stems), right)
        self.assertEqual(table_hits(self.url), hits + 10, "the answers of the changed gallery are kept")

    def test_identical_uploads_at_the_same_time_each_get_their_own_answer(self):
        images = {stem: image(stem) for stem in ("test_01", "test_02", "test_03")}
        jobs = [(f"{stem}-{n}", stem) for n in range(6) for stem in images]
        with ThreadPoolExecutor(len(jobs)) as clients:
            answers = list(clients.map(lambda job: upload(self.url, f"{job[0]}.jpg", images[job[1]]), jobs))
        self.assertEqual(answers, [(200, f"{name}:{self.expected[stem]}\n") for name, stem in jobs])
        self.assert_queues_drain()


if __name__ == "__main__":
    unittest.main()
