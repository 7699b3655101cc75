"""End to end: moto, the web tier and two workers as processes on 127.0.0.1, fixtures through HTTP."""
import subprocess
import unittest
from concurrent.futures import ThreadPoolExecutor

import common
from common import queue_depth
from tests.support import (
    IMAGES, PYTHON, aws, child_env, expected_answers, request, stand_in_files, start, start_moto, upload,
    wait_until,
)
from tools.provision import provision

CONCURRENCY = 20
WORKERS = 2


class PipelineTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        weights, gallery = stand_in_files()
        endpoint = start_moto(cls)
        cls.config = common.load_config({"FR_PREFIX": "pipeline", "FR_ENDPOINT_URL": endpoint, "FR_POLL_WAIT": "1",
                                         "FR_AMI_ID": "ami-test"})
        cls.s3, cls.sqs = aws(endpoint, "s3"), aws(endpoint, "sqs")
        provision(cls.config, lambda service: aws(endpoint, service))
        cls.queues = common.queue_urls(cls.sqs, cls.config)
        env = child_env(FR_PREFIX="pipeline", FR_ENDPOINT_URL=endpoint, FR_POLL_WAIT=1, FR_PORT=0,
                        FR_WEIGHTS=weights, FR_GALLERY=gallery, FR_TORCH_THREADS=1)
        _, listening = start(cls, "web", [PYTHON, "web.py"], env, r"event=listening host=\S+ port=(\d+)")
        cls.url = f"http://127.0.0.1:{listening[1]}/"
        for n in range(WORKERS):
            start(cls, f"worker-{n}", [PYTHON, "worker.py"], env, "event=ready")
        cls.expected = expected_answers()

    def read_image(self, stem):
        return (IMAGES / f"{stem}.jpg").read_bytes()

    def assert_queues_drain(self):
        for url in self.queues:
            wait_until(lambda: sum(queue_depth(self.sqs, url)) == 0, 10, what=f"{url} empty")

    def keys(self, bucket):
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def test_hundred_concurrent_uploads_get_the_expected_answers(self):
        uploads_before = len(self.keys(self.config.in_bucket))
        stems = sorted(self.expected)
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            answers = list(pool.map(lambda s: upload(self.url, f"{s}.jpg", self.read_image(s)), stems))
        self.assertEqual(answers, [(200, f"{s}:{self.expected[s]}\n") for s in stems])
        self.assertEqual(len(self.keys(self.config.in_bucket)), uploads_before + len(stems))
        for stem in stems:
            stored = self.s3.get_object(Bucket=self.config.out_bucket, Key=stem)["Body"].read().decode()
            self.assertEqual(stored, self.expected[stem], stem)
        self.assert_queues_drain()

    def test_two_uploads_with_same_name_get_their_own_answers(self):
        pairs = [("test_00", "test_01"), ("test_02", "test_03"), ("test_07", "test_08")] * 3
        with ThreadPoolExecutor(2 * len(pairs)) as pool:
            futures = [(pool.submit(upload, self.url, "same.jpg", self.read_image(a)),
                        pool.submit(upload, self.url, "same.jpg", self.read_image(b)), a, b) for a, b in pairs]
            for first, second, a, b in futures:
                self.assertEqual(first.result(), (200, f"same:{self.expected[a]}\n"))
                self.assertEqual(second.result(), (200, f"same:{self.expected[b]}\n"))
        self.assert_queues_drain()

    def test_model_command_line_gives_the_service_answer(self):
        stems = ["test_00", "test_04", "test_09"]
        env = child_env(FR_WEIGHTS=self.config.weights, FR_GALLERY=self.config.gallery)
        printed = subprocess.run([PYTHON, "-m", "model", *[str(IMAGES / f"{s}.jpg") for s in stems]],
                                 env=env, capture_output=True, text=True, check=True, timeout=120).stdout
        served = "".join(upload(self.url, f"{s}.jpg", self.read_image(s))[1] for s in stems)
        self.assertEqual(printed, served)

    def test_an_image_without_a_face_is_422_and_the_next_upload_is_answered(self):
        from PIL import Image
        import io

        blank = io.BytesIO()
        Image.new("RGB", (64, 64), "white").save(blank, "JPEG")
        self.assertEqual(upload(self.url, "blank.jpg", blank.getvalue()), (422, "no face found in the image\n"))
        status, body = upload(self.url, "notes.jpg", b"this is not an image")
        self.assertEqual(status, 422)
        self.assertIn("not a readable image", body)
        self.assertEqual(upload(self.url, "test_00.jpg", self.read_image("test_00")), (200, "test_00:Paul\n"))

    def test_requests_that_are_not_uploads_get_a_clear_status(self):
        content_type, body = "multipart/form-data; boundary=b", b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--b--\r\n"
        cases = [
            (("PUT", b"", {}), 405),
            (("DELETE", b"", {}), 405),
            (("POST", b"x", {"Content-Type": "image/jpeg"}), 415),
            (("POST", body, {"Content-Type": content_type}), 400),
            (("POST", b"--b\r\n", {"Content-Type": content_type}), 400),
        ]
        for (method, data, headers), status in cases:
            with self.subTest(method=method, headers=headers):
                got, text = request(self.url, method, data, headers)
                self.assertEqual(got, status)
                self.assertEqual(text.count("\n"), 1, text)

    def test_health_is_ok_when_the_queues_answer(self):
        self.assertEqual(request(self.url + "healthz", "GET"), (200, "ok\n"))


if __name__ == "__main__":
    unittest.main()
