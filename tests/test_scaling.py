"""End to end on the whole local stack (`tools/localstack.py`, what `./setup.sh local` runs):
moto, web tier, autoscaler and the launcher's worker processes, all on 127.0.0.1."""
import threading
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

import common
from common import queue_depth
from tests.support import (
    IMAGES, PYTHON, aws, child_env, expected_answers, running_instances, stand_in_files, start, upload, wait_until,
)

MAX_INSTANCES = 15
SAMPLE_EVERY = 0.5
SCALE_IN_LIMIT = 2.0


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


class ScalingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        weights, gallery = stand_in_files()
        env = child_env(FR_PORT=0, FR_MOTO_PORT=0, FR_PREFIX="scaling", FR_POLL_WAIT=1,
                        FR_WEIGHTS=weights, FR_GALLERY=gallery, FR_MAX_INSTANCES=MAX_INSTANCES)
        _, ready = start(cls, "localstack", [PYTHON, "tools/localstack.py"], env,
                         r"event=ready url=(\S+) endpoint=(\S+)")
        cls.url, endpoint = ready[1], ready[2]
        cls.ec2, cls.sqs = aws(endpoint, "ec2"), aws(endpoint, "sqs")
        cls.config = common.load_config({"FR_PREFIX": "scaling"})

    def test_burst_scales_to_15_never_more_and_back_to_0_within_2_s(self):
        self.assertEqual(running_instances(self.ec2), 0, "instances running before any work")
        expected = expected_answers()
        stems = sorted(expected)
        sampler = Sampler(self.ec2)
        with ThreadPoolExecutor(len(stems)) as pool:
            answers = list(pool.map(lambda s: upload(self.url, f"{s}.jpg", (IMAGES / f"{s}.jpg").read_bytes()),
                                    stems))
        last_answer = time.monotonic()
        wait_until(lambda: running_instances(self.ec2) == 0, SCALE_IN_LIMIT, interval=0.1,
                   what="0 running instances after the last answer")
        scaled_in = time.monotonic() - last_answer
        counts = sampler.finish()
        self.assertEqual(answers, [(200, f"{s}:{expected[s]}\n") for s in stems])
        self.assertEqual(max(counts), MAX_INSTANCES, f"samples: {counts}")
        self.assertLessEqual(scaled_in, SCALE_IN_LIMIT)
        for url in common.queue_urls(self.sqs, self.config):
            wait_until(lambda: sum(queue_depth(self.sqs, url)) == 0, 10, what=f"{url} empty")


if __name__ == "__main__":
    unittest.main()
