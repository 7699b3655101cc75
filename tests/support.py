"""Shared by the tests: moto and service processes on 127.0.0.1 (on the AWS-like stack), an HTTP client;
what the benchmark needs too is in tools/harness.py."""

import io
import shutil
import socket
import threading
import time
import unittest
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from core import cloud, settings
from deploy.provision import provision
from simulation import awsiam, awslike
from simulation.localstack import LOCAL_STACK, MOTO_SERVER
from simulation.procs import Child
from tools import harness
from tools.harness import (  # noqa: F401 (for the tests)
    IMAGES,
    LABELS,
    PYTHON,
    aws,
    expected_answers,
    new_queue,
    running_instances,
    stand_in_files,
    table_hits,
    wait_until,
)
from tools.loadgen import FIXTURES, multipart, request, upload  # noqa: F401 (for the tests)

LOG_DIR = settings.PROJECT_DIR / "var/test-logs"
START_TIMEOUT = 60
STATE_DIR = settings.PROJECT_DIR / "var/test-state"
# Every test runs on the AWS-like local stack (simulation/awslike/), its delays cut to this fraction
# of AWS's: short, never zero (pending 0.25 s, stopping 1.5 s, SQS counts 3 s behind, ...).
TIME_SCALE = 0.05
# How often a Sampler counts running instances (the course grader's pace).
SAMPLE_EVERY = 0.5
# How often a test's wait re-describes a pool of up to 30 (tens of ms of moto's CPU a time): not a bound.
DESCRIBE_EVERY = 0.5
SIMULATION = {"FR_SIMULATE": "aws", "FR_SIMULATE_TIME_SCALE": str(TIME_SCALE)}
# Provisioning with no local stack beside it: no guest runs to say it is up, so no warm-up (which
# would wait for it in vain; the warm-up is ScalingTest's to test).
NO_GUESTS = {"FR_WARM_UP": "0"}
# How long the tests' web tiers wait for an answer (FR_REQUEST_TIMEOUT) unless a test says: the tests
# check answers, not speed (tools/bench.py does). The default 120 s was too short for a course burst
# beside three other lanes on a slow day (2026-12-07: the model alone 5.1 images/s, a burst's last
# answer after 2 minutes). Under the test clients' own 180 s (tools/loadgen.py).
REQUEST_TIMEOUT = 170


def child_env(**fr):
    """The environment for a service under test: on the AWS-like stack unless `fr` says otherwise."""
    return harness.child_env(**{**SIMULATION, **fr})


def start(testcase, name, args, env, ready, timeout=START_TIMEOUT):
    """Start a child process, stopped at the cleanup of `testcase` (a test: when it ends; a test
    class: when its last test has run); returns (child, readiness match)."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    child = Child(name, args, env, log_path=LOG_DIR / f"{name}.log", cwd=settings.PROJECT_DIR)
    if isinstance(testcase, unittest.TestCase):
        testcase.addCleanup(child.stop)
    else:
        testcase.addClassCleanup(child.stop)
    return child, child.wait_for(ready, timeout)


def start_local_stack(testcase, prefix, state, **fr):
    """The whole local stack (what `./setup.sh local` runs) for FR_PREFIX `prefix`, with FR_STATE_DIR
    `state` and the stand-in model, on free ports, stopped at the cleanup of `testcase` (see
    start): (its Child, the web tier's URL, moto's endpoint). FR_WARM_UP=0 and FR_REQUEST_TIMEOUT
    REQUEST_TIMEOUT unless `fr` says otherwise: the warm-up (ScalingTest's to test) boots every
    member once more before the stack is ready, and again after bursts."""
    weights, gallery = stand_in_files()
    env = child_env(
        FR_PORT=0,
        FR_MOTO_PORT=0,
        FR_PREFIX=prefix,
        FR_POLL_WAIT=1,
        FR_STATE_DIR=state,
        FR_WEIGHTS=weights,
        FR_GALLERY=gallery,
        **{"FR_WARM_UP": 0, "FR_REQUEST_TIMEOUT": REQUEST_TIMEOUT, **fr},
    )
    # With the warm-up, provisioning boots and hibernates the pool first: about a minute on a busy machine.
    patience = START_TIMEOUT * (2 if str(env.get("FR_WARM_UP")) == "1" else 1)
    stack, ready = start(testcase, f"{prefix}-localstack", LOCAL_STACK, env, r"event=ready url=(\S+) endpoint=(\S+)", patience)
    return stack, ready[1], ready[2]


def burst(url, stems):
    """Upload the fixture image of each stem, all at once: the (status, body) answers, in order."""
    with ThreadPoolExecutor(len(stems)) as clients:
        return list(clients.map(lambda stem: upload(url, f"{stem}.jpg", (IMAGES / f"{stem}.jpg").read_bytes()), stems))


def state_dir(name):
    """A fresh FR_STATE_DIR for one test's processes."""
    path = STATE_DIR / name
    shutil.rmtree(path, ignore_errors=True)
    return path


def start_moto(testcase, port=0, name=None, **fr):
    """A fresh moto server (on a free port unless `port`; `fr`: FR_* settings, such as another
    FR_SIMULATE_TIME_SCALE), kept as `testcase.moto`, its FR_STATE_DIR (where the AWS-like journal
    is) as `testcase.moto_state`; its endpoint URL."""
    name = name or f"moto-{getattr(testcase, '__name__', type(testcase).__name__)}"
    testcase.moto_state = state_dir(name)
    testcase.moto, match = start(
        testcase,
        name,
        [*MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)],
        child_env(FR_STATE_DIR=testcase.moto_state, **fr),
        r"Running on (http://127\.0\.0\.1:\d+)",
    )
    return match[1]


def refusals(state_dir, actions=("StartInstances", "StopInstances")):
    """The calls among `actions` the AWS-like stack refused as EC2 would (IncorrectInstanceState)."""
    return [e for e in awslike.read_journal(state_dir) if e["refused"] and e["action"] in actions]


def denials(state_dir):
    """The calls the AWS-like stack denied a role (IAM), as journalled: {principal, call, resource, reason}."""
    return [
        {k: e.get(k) for k in ("principal", "call", "resource", "reason")}
        for e in awslike.read_journal(state_dir)
        if e["action"] == "AccessDenied"
    ]


def without_permission(testcase, iam, role, action):
    """Take `action` out of `role`'s policy (the one provisioning wrote) until the test ends."""
    import json

    document = iam.get_role_policy(RoleName=role, PolicyName=role)["PolicyDocument"]
    document = json.loads(document) if isinstance(document, str) else document
    narrowed = dict(
        document,
        Statement=[
            dict(s, Action=[a for a in s["Action"] if a != action]) for s in document["Statement"] if s["Action"] != [action]
        ],
    )
    iam.put_role_policy(RoleName=role, PolicyName=role, PolicyDocument=json.dumps(narrowed))
    testcase.addCleanup(iam.put_role_policy, RoleName=role, PolicyName=role, PolicyDocument=json.dumps(document))


def with_permission(testcase, iam, role, actions, resources):
    """Add a statement allowing `actions` on `resources` to `role`'s policy until the test ends (what
    an operator would grant for a resource of the test's own)."""
    import json

    document = iam.get_role_policy(RoleName=role, PolicyName=role)["PolicyDocument"]
    document = json.loads(document) if isinstance(document, str) else document
    wider = dict(document, Statement=[*document["Statement"], {"Effect": "Allow", "Action": actions, "Resource": resources}])
    iam.put_role_policy(RoleName=role, PolicyName=role, PolicyDocument=json.dumps(wider))
    testcase.addCleanup(iam.put_role_policy, RoleName=role, PolicyName=role, PolicyDocument=json.dumps(document))


def raw_request(url, data, timeout=30):
    """(status, body text) for bytes sent as they are on one connection, read until it closes."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as connection:
        connection.sendall(data)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body.decode()


def image_bytes(size, color="white", kind="JPEG"):
    """An image file of one colour (no face in it)."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("L", size, color).save(out, kind)
    return out.getvalue()


def group_photo(stems, gap=40, scale=1):
    """A JPEG of the fixture images (64x64 faces) `stems` side by side, `gap` pixels apart, each
    `scale` times its size: (bytes, the box each face is within, (width, height)). Under stand-in
    weights a face named at one size may be named otherwise at another: at scale 1 each is named as
    alone."""
    from PIL import Image

    faces, left, within = [], 0, []
    for stem in stems:
        side = 64 * scale
        faces.append((Image.open(IMAGES / f"{stem}.jpg").convert("RGB").resize((side, side)), left))
        within.append((left, 0, left + side, side))
        left += side + gap
    photo = Image.new("RGB", (left - gap, faces[0][0].height), "white")
    for face, x in faces:
        photo.paste(face, (x, 0))
    out = io.BytesIO()
    photo.save(out, "JPEG", quality=95)
    return out.getvalue(), within, photo.size


def jpeg_scans(data):
    """(start, end) of each scan of a JPEG: its SOS segment and the entropy-coded data after it."""
    found, at = [], 2
    while data[at + 1] != 0xD9:  # EOI
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        end = at + 2 + length
        if data[at + 1] == 0xDA:  # SOS: entropy-coded data up to the next marker (0xFF 0x00 is a stuffed 0xFF)
            while not (data[end] == 0xFF and data[end + 1] not in (0x00, *range(0xD0, 0xD8))):
                end += 1
            found.append((at, end))
        at = end
    return found


def scan_bomb(side, repeats):
    """A flat grey progressive JPEG of side x side pixels whose smallest scan is sent `repeats`
    times more: few bytes, each scan a pass of the decoder over the whole image."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (side, side), 128).save(out, "JPEG", progressive=True)
    data = out.getvalue()
    start, end = min(jpeg_scans(data), key=lambda scan: scan[1] - scan[0])
    eoi = len(data) - 2
    return data[:eoi] + data[start:end] * repeats + data[eoi:]


class Service:
    """moto + provisioned resources + the web tier (+ workers) for one test class."""

    @classmethod
    def start_service(cls, workers=1, moto_port=0, model=None, **fr):
        """`model`: (weights, gallery) files, the stand-in ones by default."""
        cls.weights, cls.gallery = model or stand_in_files()
        cls.endpoint = start_moto(cls, moto_port)
        # No FR_AMI_ID: no app-tier pool (these tests start their workers themselves), so no instance waits.
        fr = dict(
            FR_PREFIX="svc",
            FR_ENDPOINT_URL=cls.endpoint,
            FR_POLL_WAIT=1,
            FR_WEIGHTS=cls.weights,
            FR_GALLERY=cls.gallery,
            **{"FR_REQUEST_TIMEOUT": REQUEST_TIMEOUT, **fr},
        )
        cls.config = settings.load_config({k: str(v) for k, v in fr.items()})
        cls.sqs, cls.s3 = aws(cls.endpoint, "sqs"), aws(cls.endpoint, "s3")
        cls.provision()
        # Workers call AWS as the app role, the web tier as the web role (the AWS-like stack checks it).
        cls.env = child_env(
            FR_PORT=0,
            FR_TORCH_THREADS=1,
            **fr,
            **awsiam.credentials(cls.config.role("app")),
        )
        cls.web_env = {**cls.env, **awsiam.credentials(cls.config.role("web"))}
        cls.web, listening = start(
            cls, f"{cls.__name__}-web", [PYTHON, "web.py"], cls.web_env, r"event=listening host=\S+ port=(\d+)"
        )
        cls.url = f"http://127.0.0.1:{listening[1]}/"
        cls.workers = [cls.start_worker(n) for n in range(workers)]

    @classmethod
    def provision(cls):
        provision(cls.config, lambda service: aws(cls.endpoint, service))

    def extra_worker(self, name, command=(PYTHON, "worker.py")):
        """A worker (`command`) for this test alone: stopped when the test ends, passed or not."""
        return start(self, f"{type(self).__name__}-worker-{name}", list(command), self.env, "event=ready")[0]

    @classmethod
    def start_worker(cls, n):
        return start(cls, f"{cls.__name__}-worker-{n}", [PYTHON, "worker.py"], cls.env, "event=ready")[0]

    def queue_url(self, name):
        return self.sqs.get_queue_url(QueueName=name)["QueueUrl"]

    def assert_queues_drain(self):
        for name in (self.config.request_queue, self.config.response_queue):
            url = self.queue_url(name)
            wait_until(lambda: sum(cloud.queue_depth(self.sqs, url)) == 0, 10, what=f"{name} empty")

    def keys(self, bucket):
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


class Sampler:
    """Counts running app instances every SAMPLE_EVERY seconds in a thread, as the course grader does."""

    def __init__(self, ec2):
        self.ec2 = ec2
        self.samples = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            self.samples.append((time.monotonic(), running_instances(self.ec2)))
            self.stop.wait(SAMPLE_EVERY)

    def finish(self):
        self.stop.set()
        self.thread.join()
        return [count for _, count in self.samples]
