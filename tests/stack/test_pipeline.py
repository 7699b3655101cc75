"""End to end: moto, the web tier and two workers as processes on 127.0.0.1, fixtures through HTTP."""

import subprocess
import tempfile
import unittest
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core import cloud, settings
from tests.support import (
    IMAGES,
    LABELS,
    PYTHON,
    Service,
    aws,
    child_env,
    denials,
    expected_answers,
    request,
    upload,
    without_permission,
)

CONCURRENCY = 20
WORKERS = 2


class PipelineTest(Service, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.start_service(workers=WORKERS)
        cls.expected = expected_answers()

    def read_image(self, stem):
        return (IMAGES / f"{stem}.jpg").read_bytes()

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

    def test_a_permission_taken_from_the_web_role_is_denied_as_aws_denies_it_and_nothing_else_is(self):
        self.assertEqual(denials(self.moto_state), [], "a call of the service's own was denied")
        without_permission(self, aws(self.endpoint, "iam"), self.config.role("web"), "s3:PutObject")
        status, body = upload(self.url, "test_00.jpg", self.read_image("test_00"))
        self.assertEqual((status, body), (503, "storage or queue unavailable, try again\n"))
        (denied,) = denials(self.moto_state)
        self.assertEqual(
            {k: denied[k] for k in ("principal", "call", "reason")},
            {
                "principal": f"arn:aws:sts::123456789012:assumed-role/{self.config.role('web')}/local",
                "call": "s3:PutObject",
                "reason": "no identity-based policy allows it",
            },
        )
        self.assertRegex(denied["resource"], rf"^arn:aws:s3:::{self.config.in_bucket}/[0-9a-f-]+/test_00\.jpg$")
        self.doCleanups()
        self.assertEqual(upload(self.url, "test_00.jpg", self.read_image("test_00")), (200, "test_00:Paul\n"))

    def test_two_uploads_with_same_name_get_their_own_answers(self):
        pairs = [("test_00", "test_01"), ("test_02", "test_03"), ("test_07", "test_08")] * 3
        with ThreadPoolExecutor(2 * len(pairs)) as pool:
            futures = [
                (
                    pool.submit(upload, self.url, "same.jpg", self.read_image(a)),
                    pool.submit(upload, self.url, "same.jpg", self.read_image(b)),
                    a,
                    b,
                )
                for a, b in pairs
            ]
            for first, second, a, b in futures:
                self.assertEqual(first.result(), (200, f"same:{self.expected[a]}\n"))
                self.assertEqual(second.result(), (200, f"same:{self.expected[b]}\n"))
        self.assert_queues_drain()

    def test_model_command_line_gives_the_service_answer(self):
        stems = ["test_00", "test_04", "test_09"]
        images = [str(IMAGES / f"{s}.jpg") for s in stems]
        served = "".join(upload(self.url, f"{s}.jpg", self.read_image(s))[1] for s in stems)
        for command, env in (
            # The model alone, told its files; and the same with the files the service's workers use.
            (["-m", "model", "--weights", str(self.weights), "--gallery", str(self.gallery)], child_env()),
            (["-m", "tools.recognize"], child_env(FR_WEIGHTS=self.weights, FR_GALLERY=self.gallery)),
        ):
            with self.subTest(command=command[1]):
                printed = subprocess.run(
                    [PYTHON, *command, *images],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=120,
                    cwd=settings.PROJECT_DIR,
                ).stdout
                self.assertEqual(printed, served)

    def test_an_image_without_a_face_is_422_and_the_next_upload_is_answered(self):
        import io

        from PIL import Image

        blank = io.BytesIO()
        Image.new("RGB", (64, 64), "white").save(blank, "JPEG")
        self.assertEqual(upload(self.url, "blank.jpg", blank.getvalue()), (422, "no face found in the image\n"))
        status, body = upload(self.url, "notes.jpg", b"this is not an image")
        self.assertEqual(status, 422)
        self.assertIn("not a readable image", body)
        self.assertEqual(upload(self.url, "test_00.jpg", self.read_image("test_00")), (200, "test_00:Paul\n"))

    def test_a_faceless_image_in_a_batch_does_not_spoil_the_others(self):
        from tests.support import image_bytes

        jobs = [(f"{s}.jpg", self.read_image(s)) for s in ("test_00", "test_01", "test_02", "test_03", "test_07", "test_08")]
        jobs[2:2] = [("blank1.jpg", image_bytes((64, 64))), ("blank2.jpg", image_bytes((64, 64), "black"))]
        with ThreadPoolExecutor(len(jobs)) as pool:
            answers = list(pool.map(lambda job: upload(self.url, *job), jobs))
        expected = [
            (200, f"{name[:-4]}:{self.expected[name[:-4]]}\n")
            if name.startswith("test")
            else (422, "no face found in the image\n")
            for name, _ in jobs
        ]
        self.assertEqual(answers, expected)
        self.assert_queues_drain()

    def test_a_tiny_image_is_422_at_once_and_the_three_in_its_batch_are_answered(self):
        from tests.support import image_bytes

        jobs = [(f"{s}.jpg", self.read_image(s)) for s in ("test_00", "test_01", "test_02")]
        jobs.insert(1, ("tiny.png", image_bytes((1, 1), kind="PNG")))
        with ThreadPoolExecutor(len(jobs)) as pool:
            answers = list(pool.map(lambda job: upload(self.url, *job), jobs))
        self.assertEqual(answers[1], (422, "image too small: 1x1 pixels (a face needs 20x20)\n"))
        self.assertEqual(
            answers[:1] + answers[2:],
            [(200, f"{name[:-4]}:{self.expected[name[:-4]]}\n") for name, _ in jobs if name != "tiny.png"],
        )
        self.assert_queues_drain()
        self.assertEqual(sum(cloud.queue_depth(self.sqs, self.queue_url(self.config.dead_letter_queue))), 0)
        # The upload answered with an error is not kept; the answered ones are.
        kept = self.keys(self.config.in_bucket)
        self.assertEqual([k for k in kept if k.endswith("/tiny.png")], [])
        self.assertGreaterEqual(len([k for k in kept if k.endswith(("/test_00.jpg", "/test_01.jpg", "/test_02.jpg"))]), 3)

    def test_requests_that_are_not_uploads_get_a_clear_status(self):
        content_type = "multipart/form-data; boundary=b"
        body = b"--b\r\nContent-Disposition: form-data; name=x\r\n\r\n1\r\n--b--\r\n"
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

    def test_the_load_client_checks_answers_and_fails_on_wrong_ones(self):
        with tempfile.TemporaryDirectory() as scratch:
            wrong = Path(scratch, "wrong.csv")
            wrong.write_text("Image,Results\n" + "".join(f"{s},Nobody\n" for s in self.expected))
            for csv_path, status in ((LABELS, 0), (wrong, 1)):
                done = subprocess.run(
                    [
                        PYTHON,
                        "-m",
                        "tools.loadgen",
                        "--url",
                        self.url,
                        "--count",
                        "20",
                        "--concurrency",
                        "10",
                        "--expected",
                        str(csv_path),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                self.assertEqual(done.returncode, status, done.stdout + done.stderr)
                summary = dict(line.split(None, 1) for line in done.stdout.splitlines())
                self.assertEqual(summary["count"], "20")
                self.assertEqual(summary["wrong"], "0" if status == 0 else "20")

    def test_health_is_ok_when_the_queues_answer(self):
        self.assertEqual(request(self.url + "healthz", "GET"), (200, "ok\n"))


if __name__ == "__main__":
    unittest.main()
