"""Load client: uploads images to the service at a given concurrency and checks the answers.

    .venv/bin/python -m tools.loadgen [--url URL] [--images DIR] [--count N] [--concurrency C]
                                      [--expected CSV | --no-expected] [--distinct] [--drained SECONDS]

With no arguments it reproduces the course grader's test against `./setup.sh local`: the 100
fixture images, all at once, checked against face_images_100.csv. The images of the folder are
repeated as needed to make N uploads; with --distinct each upload's bytes differ (a JPEG comment
carries its number), so no cache or deduplication can answer one from another. Prints a live
progress line, then a summary (count, wrong answers, errors by status, p50/p95/max latency,
throughput); with --drained, it then waits up to SECONDS for the service's /status to show every
queue (the dead-letter queue included) empty. Exits 1 if any answer was wrong or failed, or a
queue did not drain. Standard library only: it is also the HTTP client of the tests and the benchmark.
"""

import argparse
import csv
import http.client
import json
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from common import quantile
from core import settings

FIXTURES = settings.PROJECT_DIR.parent / "shared/fixtures"


def multipart(fields, boundary=None):
    """(content type, body) of multipart/form-data: fields are (name, filename or None, bytes)."""
    boundary = boundary or uuid.uuid4().hex
    body = b""
    for name, filename, data in fields:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            body += b"Content-Type: application/octet-stream\r\n"
        body += b"\r\n" + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


def exchange(url, method="POST", body=b"", headers=None, timeout=180):
    """(status, body text, response headers) of one HTTP request."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read().decode(), dict(response.getheaders())
    finally:
        connection.close()


def request(url, method="POST", body=b"", headers=None, timeout=180):
    """(status, body text) of one HTTP request."""
    return exchange(url, method, body, headers, timeout)[:2]


def upload(url, filename, data, timeout=180, with_headers=False, headers=None):
    """(status, body text) of `curl -F inputFile=@filename URL` (and the response headers); `headers`: more."""
    content_type, body = multipart([("inputFile", filename, data)])
    answer = exchange(url, body=body, headers={"Content-Type": content_type, **(headers or {})}, timeout=timeout)
    return answer if with_headers else answer[:2]


def read_expected(path):
    """{stem: name} from a CSV of `Image,Results` rows."""
    with open(path, newline="") as f:
        return {row["Image"]: row["Results"] for row in csv.DictReader(f)}


def jobs_from(images, count, distinct=False):
    """`count` uploads (file name, bytes) of the image files `images`, repeated as needed; with
    `distinct`, each JPEG marked with its upload's number in a comment segment."""
    payloads = {path: path.read_bytes() for path in images}
    jobs = [(images[i % len(images)].name, payloads[images[i % len(images)]]) for i in range(count)]
    return [(name, numbered(data, i)) for i, (name, data) in enumerate(jobs)] if distinct else jobs


def numbered(jpeg, number):
    """The JPEG `jpeg` with a comment (COM) segment carrying `number` after its start marker:
    other bytes, the same image."""
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("--distinct needs JPEG images")
    text = f"upload {number}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + jpeg[2:]


def queues_drained(url, within):
    """Seconds until the service's /status shows every queue empty, or None after `within` s.
    (Its depths are SQS's approximate counts: on AWS, and on the AWS-like stack, they trail the
    truth by up to a minute.)"""
    started = time.monotonic()
    pause = threading.Event()
    while time.monotonic() - started < within:
        status, text = request(url.rstrip("/") + "/status?format=json", "GET")
        queues = json.loads(text).get("queues") if status == 200 else None
        if queues and all(n == 0 for depth in queues.values() for n in depth.values()):
            return round(time.monotonic() - started, 1)
        pause.wait(1)
    return None


class Run:
    """One load run: uploads of `jobs` (file name, bytes) at `concurrency`."""

    def __init__(self, url, jobs, concurrency, expected=None, progress=None):
        self.url = url
        self.jobs = jobs
        self.concurrency = concurrency
        self.expected = expected
        self.progress = progress
        self.results = []
        self._lock = threading.Lock()

    def one(self, job):
        filename, data = job
        stem = Path(filename).stem
        started = time.monotonic()
        try:
            status, body = upload(self.url, filename, data)
        except OSError as e:
            status, body = 0, f"{type(e).__name__}: {e}"
        seconds = time.monotonic() - started
        wrong = status == 200 and self.expected is not None and body != f"{stem}:{self.expected.get(stem)}\n"
        with self._lock:
            self.results.append((status, seconds, wrong, time.monotonic()))
            if self.progress:
                self.progress(self)
        return status, body

    def go(self):
        self.started = time.monotonic()
        with ThreadPoolExecutor(self.concurrency) as pool:
            self.answers = list(pool.map(self.one, self.jobs))
        self.ended = time.monotonic()
        return self.summary()

    def summary(self):
        latencies = sorted(s for status, s, _, _ in self.results if status == 200)
        errors = {}
        for status, *_ in self.results:
            if status != 200:
                errors[str(status)] = errors.get(str(status), 0) + 1
        seconds = self.ended - self.started
        return {
            "count": len(self.results),
            "ok": sum(1 for status, _, wrong, _ in self.results if status == 200 and not wrong),
            "wrong": sum(1 for *_, wrong, _ in self.results if wrong),
            "errors": errors,
            "first_answer_s": round(min(t for *_, t in self.results) - self.started, 3) if self.results else None,
            "latency_p50_s": quantile(latencies, 0.5),
            "latency_p95_s": quantile(latencies, 0.95),
            "latency_max_s": quantile(latencies, 1.0),
            "seconds": round(seconds, 3),
            "throughput_per_s": round(len(self.results) / seconds, 2) if seconds else None,
        }


def show_progress(run):
    done = len(run.results)
    failed = sum(1 for status, _, wrong, _ in run.results if status != 200 or wrong)
    print(
        f"\r{done}/{len(run.jobs)} answered, {failed} failed, {time.monotonic() - run.started:.1f} s",
        end="",
        file=sys.stderr,
        flush=True,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description="Upload images at a concurrency and check the answers.")
    parser.add_argument("--url", default="http://127.0.0.1:8000/")
    parser.add_argument("--images", type=Path, default=FIXTURES / "face_images_100")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument(
        "--expected",
        type=Path,
        default=FIXTURES / "face_images_100.csv",
        help="CSV of Image,Results rows to check answers against",
    )
    parser.add_argument("--no-expected", action="store_true", help="do not check the answers")
    parser.add_argument("--distinct", action="store_true", help="make each upload's bytes different")
    parser.add_argument(
        "--drained", type=float, metavar="SECONDS", help="then wait up to SECONDS for every queue of the service to be empty"
    )
    args = parser.parse_args(argv)
    images = sorted(p for p in args.images.iterdir() if p.is_file())
    if not images:
        parser.error(f"no images in {args.images}")
    expected = None if args.no_expected else read_expected(args.expected)
    run = Run(args.url, jobs_from(images, args.count, args.distinct), args.concurrency, expected, show_progress)
    summary = run.go()
    if args.drained is not None:
        summary["queues_empty_after_s"] = queues_drained(args.url, args.drained)
    print(file=sys.stderr)
    width = max(map(len, summary))
    for key, value in summary.items():
        print(f"{key:<{width}}  {value}")
    drained = args.drained is None or summary["queues_empty_after_s"] is not None
    return 0 if summary["ok"] == summary["count"] and drained else 1


if __name__ == "__main__":
    sys.exit(main())
