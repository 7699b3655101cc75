"""Real AWS, first try, on the AWS-like local stack (what `./setup.sh local` runs with FR_SIMULATE=aws):
provisioning, a burst from 0 instances, and a teardown while the autoscaler still runs."""
import time
import unittest

import settings
from tests.support import (
    TIME_SCALE,
    aws,
    burst,
    expected_answers,
    refusals,
    running_instances,
    start_local_stack,
    state_dir,
)
from tools import awslike
from tools.localstack import LOCAL_AMI
from tools.provision import Provisioner

PREFIX = "first"


class FirstRunTest(unittest.TestCase):
    def test_burst_from_zero_then_teardown_while_the_autoscaler_runs_leaves_nothing(self):
        state = state_dir("first-run")
        stack, url, endpoint = start_local_stack(self, PREFIX, state)
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
        answers = burst(url, stems)
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
