"""Bad input, faults and recovery, against the real processes on 127.0.0.1."""

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import time
import unittest
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import worker as worker_module
from core import settings, statefiles
from core.cloud import queue_depth
from core.messages import Reply, Request, deadline_attribute, decode, encode
from deploy.provision import provision
from scaling import pool
from simulation import awsiam
from simulation.netlink import Link
from tests.framing import FROM_THE_APP_TIER, GOOD, MAX_BODY, bad_requests, form, part, post
from tests.support import (
    NO_GUESTS,
    PYTHON,
    Service,
    aws,
    child_env,
    new_queue,
    raw_request,
    scan_bomb,
    stand_in_files,
    start,
    start_moto,
    state_dir,
    upload,
    wait_until,
    with_permission,
)
from worker import WORKER_STATE

# A worker whose model holds each batch until a flag file exists (tests/held_worker.py).
HELD_WORKER = [PYTHON, "-m", "tests.held_worker"]
GOOD_ANSWER = (200, "test_00:Paul\n")


class BadInputTest(Service, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.start_service(FR_MAX_BODY=MAX_BODY, FR_CLIENT_TIMEOUT=1)

    def test_each_bad_request_gets_a_clear_status_and_the_next_good_one_is_answered(self):
        # The web tier's reading of each is tests/unit/test_framing.py's (in-process); here, those the
        # app tier answers, and a few of the web tier's, each followed by a good upload.
        through_the_service = FROM_THE_APP_TIER | {"too big", "truncated", "garbage", "long request line", "zero-padded length"}
        cases = [case for case in bad_requests() if case[0] in through_the_service]
        self.assertEqual(len(cases), len(through_the_service))
        for name, data, status, reason in cases:
            with self.subTest(name):
                got_status, body = raw_request(self.url, data)
                self.assertEqual(got_status, status, body)
                self.assertIn(reason, body)
                self.assertEqual(body.count("\n"), 1, f"one line: {body!r}")
                self.assertEqual(upload(self.url, "test_00.jpg", GOOD), GOOD_ANSWER)

    def test_a_method_is_never_echoed_back(self):
        method = b"X" * 60000
        status, body = raw_request(self.url, method + b" / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual((status, body), (405, "method not allowed: GET / for the page, POST / to upload\n"))

    def test_a_decode_bomb_fails_alone_and_never_holds_up_the_images_beside_it(self):
        bomb = scan_bomb(4000, 10_000)  # under the pixel limit; ~20 s of decoding without the scan limit
        for attempt in ("first", "second"):
            with self.subTest(attempt), ThreadPoolExecutor(4) as clients:
                started = time.monotonic()
                refused = clients.submit(upload, self.url, "bomb.jpg", bomb)
                good = [clients.submit(upload, self.url, "test_00.jpg", GOOD) for _ in range(3)]
                self.assertEqual([g.result() for g in good], [GOOD_ANSWER] * 3)
                self.assertLess(time.monotonic() - started, 10, "the images beside the bomb waited for it")
                status, body = refused.result()
                self.assertEqual(status, 422)
                self.assertRegex(body, r"^too many JPEG scans: 100\d\d \(limit 100\)\n$")

    def test_file_names_are_sanitised_and_never_name_the_key(self):
        cases = {
            "../../etc/passwd.jpg": "passwd",
            "dir/sub/face.jpg": "face",
            "nul\x00byte.jpg": "nul_byte",
            "Zoë Face.jpg": "Zo__Face",
            "a" * 300 + ".jpg": "a" * 100,
            "": "upload",
        }
        for filename, stem in cases.items():
            with self.subTest(filename=filename):
                self.assertEqual(upload(self.url, filename, GOOD), (200, f"{stem}:Paul\n"))
        keys = [o["Key"] for o in self.s3.list_objects_v2(Bucket=self.config.in_bucket)["Contents"]]
        for key in keys:
            self.assertRegex(key, r"^[0-9a-f]{32}/[A-Za-z0-9._-]{1,105}$")

    def test_an_rfc_2231_file_name_is_answered(self):
        data = post(
            part("form-data; name=inputFile; filename*=UTF-8''Zo%C3%AB%20Face.jpg", GOOD),
            "multipart/form-data; boundary=BOUNDARY",
        )
        self.assertEqual(raw_request(self.url, data), (200, "Zo__Face:Paul\n"))

    def test_a_client_that_goes_silent_mid_body_is_timed_out_and_freed(self):
        data = form("a.jpg", GOOD)
        status, body = raw_request(self.url, data[: len(data) // 2], timeout=10)
        self.assertEqual((status, body), (408, "request not received in time\n"))
        self.assertEqual(upload(self.url, "test_00.jpg", GOOD), GOOD_ANSWER)


class FullDiskTest(unittest.TestCase):
    """The web host's disk full (a small tmpfs, filled): the autoscaler goes on scaling, an upload
    that needs the disk is a 503 in one line."""

    @classmethod
    def setUpClass(cls):
        cls.disk = state_dir("full-disk")
        cls.disk.mkdir(parents=True)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(cls.disk)], capture_output=True)
        if mounted.returncode:
            raise unittest.SkipTest(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
        cls.addClassCleanup(subprocess.run, ["umount", "-l", str(cls.disk)])
        cls.endpoint = start_moto(cls)
        fr = dict(FR_PREFIX="full", FR_ENDPOINT_URL=cls.endpoint, FR_AMI_ID="ami-0app", FR_MAX_INSTANCES="1", **NO_GUESTS)
        cls.config = settings.load_config({**fr, "FR_SPARE_INSTANCES": "0"})
        provision(cls.config, lambda service: aws(cls.endpoint, service))
        web_role = awsiam.credentials(cls.config.role("web"))
        cls.env = child_env(**fr, FR_SPARE_INSTANCES=0, FR_PORT=0, FR_SCALE_INTERVAL=0.2, **web_role)

    def fill(self):
        """Fill the disk (until the test ends)."""
        filler = os.open(self.disk / "filler", os.O_WRONLY | os.O_CREAT)
        self.addCleanup(os.unlink, self.disk / "filler")
        try:
            while os.write(filler, b"x" * 4096):
                pass
        except OSError:  # full
            pass
        finally:
            os.close(filler)

    def test_the_autoscaler_stops_an_idle_member_with_its_state_dir_full_and_says_so_once(self):
        self.fill()
        sqs = aws(self.endpoint, "sqs")
        sqs.purge_queue(QueueUrl=sqs.get_queue_url(QueueName=self.config.request_queue)["QueueUrl"])  # no work
        ec2 = aws(self.endpoint, "ec2")
        (member,) = pool.describe(ec2, self.config)
        ec2.start_instances(InstanceIds=[member["id"]])
        wait_until(lambda: pool.instance_states(ec2, [member["id"]])[member["id"]] == "running", 30, what="running")
        full = dict(self.env, FR_STATE_DIR=str(self.disk))
        scaler, _ = start(self, "full-disk-autoscaler", [PYTHON, "autoscaler.py"], full, "event=ready")
        wait_until(
            lambda: pool.instance_states(ec2, [member["id"]])[member["id"]] in ("stopping", "stopped"),
            30,
            what="the idle member stopped",
        )
        scaler.wait_for("event=decision .*stopped=1", 10)
        self.assertIsNone(scaler.popen.poll(), "the autoscaler is still running")
        log = scaler.tail(1000)
        self.assertEqual(log.count("event=state_write_failed"), 1, log)
        self.assertNotIn("event=step_failed", log)
        self.assertEqual([p.name for p in self.disk.iterdir()], ["filler"], "no temporary file left")

    def test_an_upload_the_full_disk_cannot_hold_is_a_503_in_one_line(self):
        state = state_dir("full-disk-web")
        web, listening = start(
            self,
            "full-disk-web",
            [PYTHON, "web.py"],
            dict(self.env, FR_STATE_DIR=str(state), TMPDIR=str(self.disk), FR_REQUEST_TIMEOUT="1"),
            r"event=listening host=\S+ port=(\d+)",
        )
        url = f"http://127.0.0.1:{listening[1]}/"
        large = GOOD + b"\0" * (2 * 1024 * 1024)  # past the spool's memory: written to the disk
        # With room, it is spooled there (no worker runs: no answer); Python's temporary directory is
        # chosen then (a full one would be passed over for /tmp).
        self.assertEqual(upload(url, "large.jpg", large)[0], 504)
        self.fill()
        self.assertEqual(upload(url, "large.jpg", large), (503, "no room to receive the upload, try again\n"))
        self.assertIsNone(web.popen.poll())


class FaultTest(Service, unittest.TestCase):
    """Starts with no worker: the tests play the part of failing workers, or start real ones."""

    @classmethod
    def setUpClass(cls):
        # A rescuing worker may take many seconds to start on a busy machine: the web tier waits long.
        cls.start_service(workers=0, FR_REQUEST_TIMEOUT=60, FR_VISIBILITY_TIMEOUT=1)

    def tearDown(self):
        for url in (self.queue_url(self.config.request_queue), self.queue_url(self.config.response_queue)):
            self.sqs.purge_queue(QueueUrl=url)

    def reply_queue(self, name):
        """A reply queue of the test's own, which the app role may answer on (IAM is enforced); its URL."""
        url = new_queue(self.sqs, name)
        arn = f"arn:aws:sqs:us-east-1:123456789012:{name}"
        with_permission(self, aws(self.endpoint, "iam"), self.config.role("app"), ["sqs:SendMessage"], [arn])
        return url

    def test_a_request_workers_keep_failing_on_ends_in_502_and_stays_in_the_dead_letter_queue(self):
        request_url = self.queue_url(self.config.request_queue)
        dead_letters = self.queue_url(self.config.dead_letter_queue)
        # Were the web tier's hide refused, the dead letter would be back after this.
        self.sqs.set_queue_attributes(QueueUrl=dead_letters, Attributes={"VisibilityTimeout": "1"})
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(upload, self.url, "test_00.jpg", GOOD)
            # Three workers in turn take the message and die without deleting it.
            for attempt in range(3):
                wait_until(
                    lambda: self.sqs.receive_message(QueueUrl=request_url, WaitTimeSeconds=1, VisibilityTimeout=1).get(
                        "Messages"
                    ),
                    8,
                    what=f"delivery {attempt + 1}",
                )
            # The next receive finds it over maxReceiveCount and moves it to the dead-letter queue.
            wait_until(
                lambda: (
                    self.sqs.receive_message(QueueUrl=request_url, WaitTimeSeconds=1)
                    and sum(queue_depth(self.sqs, dead_letters)) == 1
                ),
                8,
                what="dead-lettered",
            )
            status, body = answer.result()
        self.assertEqual(status, 502)
        self.assertIn("could not be processed", body)
        self.assertEqual(queue_depth(self.sqs, dead_letters), (0, 1), "kept, hidden, for the operator")
        self.web.wait_for(r"event=dead_letters_hidden count=1 seconds=43\d\d\d", 10)
        self.assertNotIn("Messages", self.sqs.receive_message(QueueUrl=dead_letters, WaitTimeSeconds=3))

    def test_replies_nobody_waits_for_are_deleted(self):
        reply_url = self.queue_url(self.config.response_queue)
        for n in range(5):
            self.sqs.send_message(QueueUrl=reply_url, MessageBody=encode(Reply(f"gone{n}", "x", name="Paul")))
        self.sqs.send_message(QueueUrl=reply_url, MessageBody="not a reply")
        wait_until(lambda: sum(queue_depth(self.sqs, reply_url)) == 0, 10, what="response queue empty")

    def test_kill_9_of_a_worker_mid_image_another_worker_answers(self):
        # Its model holds the image until a flag that never comes: killed, it is mid-image.
        doomed = self.extra_worker("doomed", [*HELD_WORKER, str(state_dir("doomed") / "never")])
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(upload, self.url, "test_00.jpg", GOOD)
            request_id = doomed.wait_for(r"event=received id=(\w+)", 30)[1]
            doomed.signal(signal.SIGKILL)
            rescuer = self.extra_worker("rescuer")
            self.assertEqual(answer.result(), GOOD_ANSWER)
        rescuer.wait_for(f"event=done id={request_id}", 10)
        self.assertFalse([line for line in doomed.lines if f"event=done id={request_id}" in line])

    def test_an_image_gone_from_the_input_bucket_is_answered_at_once_not_retried(self):
        # On AWS this needs s3:ListBucket in the app role (GetObject of a missing key is 403 without it).
        replies = self.reply_queue("svc-gone-replies")
        worker = self.extra_worker("gone")
        self.sqs.send_message(
            QueueUrl=self.queue_url(self.config.request_queue), MessageBody=encode(Request("gone1", "gone1/x.jpg", "x", replies))
        )
        received = wait_until(
            lambda: self.sqs.receive_message(QueueUrl=replies, WaitTimeSeconds=1).get("Messages"), 10, what="a reply"
        )
        self.assertEqual(decode(Reply, received[0]["Body"]).error, "the image is no longer in the input bucket")
        worker.wait_for("event=done id=gone1", 5)
        self.assertEqual([line for line in worker.lines if "event=received id=gone1" in line][1:], [], "retried")

    def test_a_request_nobody_waits_for_any_more_is_acknowledged_unanswered(self):
        # Its web tier stopped waiting or crashed: answering it would cost the model's time for
        # nobody, and new uploads would wait behind it. When that is: the deadline the web tier
        # sends with it, else (an older web tier) FR_REQUEST_TIMEOUT after SQS took it.
        replies = self.reply_queue("svc-expired-replies")  # only the worker's judgement keeps it empty
        request_url = self.queue_url(self.config.request_queue)

        def send(request_id, **attributes):
            body = encode(Request(request_id, f"{request_id}/x.jpg", "x", replies))
            self.sqs.send_message(QueueUrl=request_url, MessageBody=body, **attributes)

        send("old1")
        send("later1", MessageAttributes=deadline_attribute(60))  # its client waits longer than the worker's timeout
        sent = time.time()
        timeout = 0.5
        wait_until(lambda: time.time() - sent > timeout + worker_module.CLOCK_MARGIN + 0.5, 10, what="the requests old")
        send("past1", MessageAttributes=deadline_attribute(-worker_module.CLOCK_MARGIN - 1))  # just sent, given up on
        worker, _ = start(
            self, "FaultTest-worker-expiry", [PYTHON, "worker.py"], dict(self.env, FR_REQUEST_TIMEOUT=str(timeout)), "event=ready"
        )
        worker.wait_for("event=expired id=old1", 20)
        worker.wait_for("event=expired id=past1", 20)
        wait_until(lambda: sum(queue_depth(self.sqs, request_url)) == 0, 10, what="the requests acknowledged")
        (answer,) = wait_until(lambda: self.sqs.receive_message(QueueUrl=replies, WaitTimeSeconds=1).get("Messages"), 10)
        self.assertEqual(decode(Reply, answer["Body"]).id, "later1", "the request whose client still waits is answered")
        self.assertEqual(self.sqs.receive_message(QueueUrl=replies, WaitTimeSeconds=1).get("Messages", []), [])
        self.assertNotIn("event=received id=old1", worker.tail(1000))
        self.assertNotIn("event=received id=past1", worker.tail(1000))

    def test_a_request_received_by_a_stopping_worker_is_answered_not_given_back(self):
        # Given back, each return counts as a receive: three instances stopped after a burst sent the
        # next request to the dead-letter queue. The long poll makes the window wide.
        # botocore's debug log says when the long poll is made: told to stop before, the worker
        # would stop without polling, and the request would wait for nobody.
        worker, _ = start(
            self,
            "worker-stopping-poll",
            [PYTHON, "worker.py"],
            dict(self.env, FR_POLL_WAIT="10", FR_LOG_LEVEL="DEBUG"),
            r"Making request for OperationModel\(name=ReceiveMessage\)",
        )
        worker.signal(signal.SIGTERM)
        self.assertEqual(upload(self.url, "test_00.jpg", GOOD), GOOD_ANSWER)
        self.assertEqual(worker.popen.wait(15), 0)

    def test_a_worker_told_to_stop_mid_image_finishes_it_first(self):
        worker = self.extra_worker("stopping")
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(upload, self.url, "test_00.jpg", GOOD)
            request_id = worker.wait_for(r"event=received id=(\w+)", 30)[1]
            worker.signal(signal.SIGTERM)
            self.assertEqual(answer.result(), GOOD_ANSWER)
        self.assertEqual(worker.popen.wait(10), 0)
        worker.wait_for(f"event=done id={request_id}", 1)


class NoAnswerTest(Service, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.start_service(workers=0, FR_REQUEST_TIMEOUT=3)

    def test_no_answer_in_time_is_504(self):
        self.assertEqual(upload(self.url, "test_00.jpg", GOOD), (504, "no answer within 3 s\n"))


class HibernationTest(Service, unittest.TestCase):
    """A worker frozen as hibernation freezes it: SIGSTOP, and its network link to moto cut."""

    @classmethod
    def setUpClass(cls):
        cls.start_service(workers=0, FR_REQUEST_TIMEOUT=60, FR_VISIBILITY_TIMEOUT=1)

    def frozen_worker(self, name, command=(PYTHON, "worker.py"), **fr):
        """A worker (`command`) reaching moto through a Link of its own: (worker, link)."""
        link = Link((urlsplit(self.endpoint).hostname, urlsplit(self.endpoint).port))
        self.addCleanup(link.close)
        worker, _ = start(self, name, list(command), dict(self.env, FR_ENDPOINT_URL=link.url, **fr), "event=ready")
        self.addCleanup(worker.stop)
        return worker, link

    def assert_nothing_dead_lettered(self):
        self.assertEqual(queue_depth(self.sqs, self.queue_url(self.config.dead_letter_queue)), (0, 0))

    def test_a_worker_frozen_mid_batch_gives_it_up_and_the_request_is_answered_once(self):
        # Its model holds the batch until the flag is made: frozen, it is mid-batch.
        flag = state_dir("frozen-batch") / "go"
        worker, link = self.frozen_worker("frozen-batch", (*HELD_WORKER, str(flag)))
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(upload, self.url, "test_00.jpg", GOOD)
            request_id = worker.wait_for(r"event=received id=(\w+)", 30)[1]
            worker.signal(signal.SIGSTOP)
            link.cut()
            # Past the visibility timeout, another worker receives the request and answers it.
            self.extra_worker("rescuer-of-frozen")
            self.assertEqual(answer.result(), GOOD_ANSWER)
        flag.parent.mkdir(parents=True, exist_ok=True)
        flag.touch()
        worker.signal(signal.SIGCONT)
        worker.wait_for(f"event=batch_given_up ids={request_id}", 30)
        self.assertEqual(upload(self.url, "test_00.jpg", GOOD), GOOD_ANSWER, "both workers work on")
        self.assertFalse([line for line in self.web.lines if f"unclaimed_reply id={request_id}" in line], "answered twice")
        self.assert_nothing_dead_lettered()

    def test_a_worker_frozen_mid_long_poll_without_the_hooks_still_answers_the_request_it_missed(self):
        # No hook: its long poll waits on a dead connection until the read timeout (poll + 10 s).
        worker, link = self.frozen_worker("frozen-poll", FR_POLL_WAIT="3")
        self.freeze_mid_poll(worker, link)
        request_url = self.queue_url(self.config.request_queue)
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(upload, self.url, "test_00.jpg", GOOD)
            # moto's side of the cut long poll takes the request and answers it to nobody.
            wait_until(lambda: queue_depth(self.sqs, request_url) == (0, 1), 15, what="the request taken")
            worker.signal(signal.SIGCONT)
            self.assertEqual(answer.result(), GOOD_ANSWER)
        self.assert_nothing_dead_lettered()

    def test_with_the_hooks_a_worker_pauses_before_the_freeze_and_goes_on_at_once_after(self):
        state = state_dir("hooks")
        worker, link = self.frozen_worker("hooked", FR_POLL_WAIT="3", FR_STATE_DIR=state)
        hook_env = dict(self.env, FR_STATE_DIR=state)
        done = subprocess.run([PYTHON, "worker.py", "--pause"], env=hook_env, cwd=settings.PROJECT_DIR, timeout=60)
        self.assertEqual(done.returncode, 0)
        self.assertTrue(statefiles.read_state(dataclasses.replace(self.config, state_dir=state), WORKER_STATE)["paused"])
        worker.signal(signal.SIGSTOP)
        link.cut()
        request_url = self.queue_url(self.config.request_queue)
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(upload, self.url, "test_00.jpg", GOOD)
            # Paused before the freeze, it had no poll for SQS to hand the request to.
            wait_until(lambda: queue_depth(self.sqs, request_url) == (1, 0), 15, what="the request waiting")
            worker.signal(signal.SIGCONT)
            subprocess.run([PYTHON, "worker.py", "--resume"], env=hook_env, cwd=settings.PROJECT_DIR, timeout=60, check=True)
            self.assertEqual(answer.result(), GOOD_ANSWER)
        worker.wait_for("event=reconnected", 5)
        self.assertFalse([line for line in worker.lines if "receive_failed" in line], "no call on a dead connection")
        self.assert_nothing_dead_lettered()

    def freeze_mid_poll(self, worker, link):
        """SIGSTOP the worker once its long poll is on its way, and cut its link."""
        before = link.requests
        wait_until(lambda: link.requests > before, 10, what="the long poll sent")
        worker.signal(signal.SIGSTOP)
        link.cut()


class InstanceStartTest(Service, unittest.TestCase):
    """What an app instance's worker meets as the machine starts: credentials not there yet, a
    worker.json left by the worker of an earlier boot, the hooks' signals while the model loads."""

    @classmethod
    def setUpClass(cls):
        cls.start_service(workers=0)

    def worker(self, name, env, ready):
        worker, _ = start(self, name, [PYTHON, "worker.py"], env, ready)
        self.addCleanup(worker.stop)
        return worker

    def test_a_worker_started_before_the_instance_has_credentials_gets_them_when_they_come(self):
        # As the instance profile's credentials, before the metadata service gives them out.
        credentials = state_dir("late-credentials") / "credentials"
        env = {k: v for k, v in self.env.items() if not k.startswith("AWS_")}
        env.update(AWS_SHARED_CREDENTIALS_FILE=str(credentials), AWS_CONFIG_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true")
        worker = self.worker("no-credentials", env, 'event=aws_unreachable error="Unable to locate credentials')
        credentials.parent.mkdir(parents=True, exist_ok=True)
        credentials.write_text("[default]\naws_access_key_id = test\naws_secret_access_key = test\n")
        worker.wait_for("event=ready", 30)
        self.assertEqual(upload(self.url, "test_00.jpg", GOOD), GOOD_ANSWER)

    def test_a_worker_json_of_an_earlier_boot_is_not_taken_for_the_present(self):
        state = state_dir("earlier-boot")
        state.mkdir(parents=True)
        # Its pid is another process's now: the hook must not signal it (SIGUSR1 would end it).
        bystander = subprocess.Popen([PYTHON, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
        self.addCleanup(bystander.wait)
        self.addCleanup(bystander.stdin.close)
        (state / WORKER_STATE).write_text(
            json.dumps({"pid": bystander.pid, "boot": "an-earlier-boot", "paused": True, "at": time.time()})
        )
        hook = subprocess.run(
            [PYTHON, "worker.py", "--pause"],
            env=dict(self.env, FR_STATE_DIR=str(state)),
            cwd=settings.PROJECT_DIR,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(hook.returncode, 0)
        self.assertIn("event=hook_without_worker action=pause", hook.stderr)
        self.assertIsNone(bystander.poll(), "the hook signalled a process that is not the worker")
        self.assertFalse(worker_module.paused(dataclasses.replace(self.config, state_dir=state)))

    def test_the_hooks_signals_while_the_model_loads_do_not_end_the_worker(self):
        state = state_dir("loading")
        worker = self.worker("loading", dict(self.env, FR_STATE_DIR=str(state)), "event=starting")
        config = dataclasses.replace(self.config, state_dir=state)
        wait_until(
            lambda: (worker_module.read_worker_state(config) or {}).get("pid") == worker.pid,
            10,
            what="the worker's pid told to the hooks",
        )
        self.assertFalse([line for line in worker.lines if "event=model_loaded" in line], "still loading")
        worker.signal(worker_module.PAUSE_SIGNAL)
        worker.signal(worker_module.RESUME_SIGNAL)
        worker.wait_for("event=ready", 30)
        self.assertEqual(upload(self.url, "test_00.jpg", GOOD), GOOD_ANSWER)


class EarlyStartTest(Service, unittest.TestCase):
    def test_a_worker_started_before_aws_answers_loads_its_model_and_waits(self):
        # As on an instance booting: the unit starts before the network is up.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        weights, gallery = stand_in_files()
        env = child_env(
            FR_PREFIX="svc",
            FR_ENDPOINT_URL=f"http://127.0.0.1:{port}",
            FR_POLL_WAIT=1,
            FR_WEIGHTS=weights,
            FR_GALLERY=gallery,
            FR_TORCH_THREADS=1,
        )
        worker, _ = start(self, "early-worker", [PYTHON, "worker.py"], env, "event=aws_unreachable")
        worker.wait_for("event=model_loaded", 1)
        type(self).start_service(workers=0, moto_port=port)
        worker.wait_for("event=ready", 30)
        self.assertEqual(upload(self.url, "test_00.jpg", GOOD), GOOD_ANSWER)


class MotoRestartTest(Service, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.start_service(FR_REQUEST_TIMEOUT=10)

    def test_web_tier_and_worker_recover_when_moto_comes_back(self):
        self.assertEqual(upload(self.url, "test_00.jpg", GOOD), GOOD_ANSWER)
        moto_port = int(re.search(r":(\d+)$", self.endpoint)[1])
        self.moto.stop()
        status, body = upload(self.url, "test_00.jpg", GOOD)
        self.assertIn(status, (503, 504), body)
        start_moto(type(self), moto_port)
        self.provision()
        wait_until(
            lambda: upload(self.url, "test_00.jpg", GOOD) == GOOD_ANSWER,
            30,
            interval=0.5,
            what="answers again after moto restarted",
        )


if __name__ == "__main__":
    unittest.main()
