"""Real AWS, first try, on the AWS-like local stack (what `./setup.sh local` runs with FR_SIMULATE=aws):
provisioning, a burst from 0 instances, and a teardown while the autoscaler still runs."""
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

import settings
from tests.support import (
    IMAGES,
    TIME_SCALE,
    aws,
    child_env,
    expected_answers,
    refusals,
    running_instances,
    stand_in_files,
    start,
    state_dir,
    upload,
)
from tools import awslike
from tools.localstack import LOCAL_AMI, LOCAL_STACK
from tools.provision import Provisioner

PREFIX = "first"


class FirstRunTest(unittest.TestCase):
    def test_burst_from_zero_then_teardown_while_the_autoscaler_runs_leaves_nothing(self):
        weights, gallery = stand_in_files()
        state = state_dir("first-run")
        env = child_env(FR_PORT=0, FR_MOTO_PORT=0, FR_PREFIX=PREFIX, FR_POLL_WAIT=1, FR_STATE_DIR=state,
                        FR_WEIGHTS=weights, FR_GALLERY=gallery)
        stack, ready = start(self, "first-run-localstack", LOCAL_STACK, env,
                             r"event=ready url=(\S+) endpoint=(\S+)")
        url, endpoint = ready[1], ready[2]
        config = settings.load_config({"FR_PREFIX": PREFIX, "FR_ENDPOINT_URL": endpoint, "FR_AMI_ID": LOCAL_AMI,
                                     "FR_WEB_CIDR": "203.0.113.0/24"})
        provisioner = Provisioner(config, lambda name: aws(endpoint, name), out=lambda line: None)
        # The stack provisioned all but the web host; this adds it, whose autoscaler the stack's stands for.
        provisioner.provision(with_web=True)
        host = stack.wait_for(r"event=web_host_found instance=(\S+)", 30)[1]
        ec2 = aws(endpoint, "ec2")
        self.assertEqual(running_instances(ec2), 0)

        expected = expected_answers()
        stems = sorted(expected)
        with ThreadPoolExecutor(len(stems)) as clients:
            answers = list(clients.map(lambda s: upload(url, f"{s}.jpg", (IMAGES / f"{s}.jpg").read_bytes()), stems))
        self.assertEqual(answers, [(200, f"{s}:{expected[s]}\n") for s in stems])

        began = time.time()
        provisioner.teardown()
        self.assertEqual(provisioner.remaining(), [])
        stack.wait_for("event=web_host_shutting_down", 10)
        journal = [e for e in awslike.read_journal(state) if e["at"] >= began]
        self.assertEqual([e for e in journal if e["action"] == "RunInstances"], [], "launched during teardown")
        terminated = [e for e in journal if e["action"] == "TerminateInstances"]
        self.assertEqual(terminated[0]["instances"], [host], "the web host (with the autoscaler) goes first")
        shutting_down = awslike.timings(TIME_SCALE)["shutting_down"]
        self.assertGreaterEqual(terminated[1]["at"] - terminated[0]["at"], shutting_down,
                                "the pool is terminated only once the web host is")
        self.assertEqual(refusals(state), [])


if __name__ == "__main__":
    unittest.main()
