"""The control plane's faults on the whole local stack (what `./setup.sh local` runs): a web tier
killed mid-burst and restarted as its unit would be, messages gone from the queue."""

import os
import re
import signal
import time
import unittest
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core import cloud, settings, statefiles
from simulation import awslike
from simulation.procs import descendants
from tests.support import (
    IMAGES,
    TIME_SCALE,
    aws,
    running_instances,
    start_local_stack,
    state_dir,
    upload,
    wait_until,
)
from tools.loadgen import numbered

SQS_COUNT_LAG = awslike.timings(TIME_SCALE)["sqs_count_lag"]
REQUEST_TIMEOUT = 15.0
# Long enough that the lost messages are seen (SQS's count lag and a step after they were queued)
# well before the requests time out, on a slow machine too.
LOST_REQUEST_TIMEOUT = 25.0


class StackFaults(unittest.TestCase):
    """Each test runs a stack of its own."""

    def start_stack(self, prefix, max_instances, request_timeout=REQUEST_TIMEOUT):
        self.state = state_dir(f"control-{prefix}")
        stack, url, endpoint = start_local_stack(
            self, prefix, self.state, FR_MAX_INSTANCES=max_instances, FR_REQUEST_TIMEOUT=request_timeout
        )
        self.config = settings.load_config({"FR_PREFIX": prefix, "FR_STATE_DIR": str(self.state)})
        self.ec2, self.sqs = aws(endpoint, "ec2"), aws(endpoint, "sqs")
        self.request_url, _ = cloud.queue_urls(self.sqs, self.config)
        return stack, url

    def send(self, url, count, running):
        """`count` uploads of test_00, sent at once and left waiting, once `running` members run
        for them: their futures."""
        clients = ThreadPoolExecutor(count)
        self.addCleanup(clients.shutdown, cancel_futures=True)
        image = (IMAGES / "test_00.jpg").read_bytes()
        self.sent = time.monotonic()
        futures = [clients.submit(upload, url, f"sent_{n:02}.jpg", numbered(image, n)) for n in range(count)]
        wait_until(lambda: (statefiles.read_waiting(self.config) or (0,))[0] == count, 30, what=f"{count} waiting")
        wait_until(lambda: running_instances(self.ec2) == running, 30, what=f"{running} running")
        return futures

    def starts_since(self, mark):
        return [e for e in awslike.read_journal(self.state)[mark:] if e["action"] == "StartInstances"]


class WebTierCrashTest(StackFaults):
    def test_the_requests_of_a_web_tier_killed_mid_burst_are_removed_start_no_instance_and_delay_no_new_upload(self):
        # One member: it cannot work off 100 requests in the seconds the web tier takes to come back.
        stack, url = self.start_stack("crash", 1)
        futures = self.send(url, 100, 1)
        (web,) = [pid for pid in descendants(stack.pid) if b"web.py" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        os.kill(web, signal.SIGKILL)
        stack.wait_for("event=service_restarted name=web", 30)
        wait_until(lambda: all(f.done() for f in futures), 10, what="the killed web tier's clients let go")
        # The new web tier removes what its predecessor left; an upload sent at once is answered.
        self.assertEqual(upload(url, "test_00.jpg", (IMAGES / "test_00.jpg").read_bytes()), (200, "test_00:Paul\n"))
        logs = statefiles.log_dir(self.state)
        deleted = wait_until(lambda: re.search(r"event=orphans_deleted count=(\d+)", (logs / "web.log").read_text()), 30)
        self.assertGreater(int(deleted[1]), 50, "most of the 100 were still queued")
        wait_until(lambda: sum(cloud.queue_depth(self.sqs, self.request_url)) == 0, 30, what="the queue empty")
        # Back to 0, and no instance starts for them for longer than SQS's counts lag.
        wait_until(lambda: running_instances(self.ec2) == 0, 30, what="0 running")
        mark = len(awslike.read_journal(self.state))
        quiet_until = time.monotonic() + 2 * SQS_COUNT_LAG + 1
        wait_until(lambda: time.monotonic() > quiet_until, 15, what="twice SQS's count lag")
        self.assertEqual(self.starts_since(mark), [], "instances started for requests nobody waits for")


class LostMessagesTest(StackFaults):
    def test_requests_whose_messages_are_gone_do_not_hold_the_pool_up_until_they_time_out(self):
        stack, url = self.start_stack("lost", 2, LOST_REQUEST_TIMEOUT)
        futures = self.send(url, 40, 2)
        self.sqs.purge_queue(QueueUrl=self.request_url)  # their messages gone: an operator, a queue made again
        wait_until(
            lambda: running_instances(self.ec2) == 0 and statefiles.read_waiting(self.config)[0] > 0,
            self.sent + LOST_REQUEST_TIMEOUT - 1 - time.monotonic(),
            what="0 running while the web tier still waits on requests whose messages are gone",
        )
        answers = [f.result() for f in futures]
        timed_out = (504, f"no answer within {LOST_REQUEST_TIMEOUT:g} s\n")
        self.assertIn(timed_out, answers)
        for n, answer in enumerate(answers):  # those a worker held before the purge are answered
            self.assertIn(answer, [timed_out, (200, f"sent_{n:02}:Paul\n")])


if __name__ == "__main__":
    unittest.main()
