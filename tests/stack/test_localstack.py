"""The local stack's own parts: what it starts for a web host, and what it stops for an instance."""

import signal
import subprocess
import unittest

from core import settings
from scaling import pool
from simulation.localstack import Launcher, start_host_services
from simulation.procs import ChildFailed
from tests.support import aws, child_env, start_moto, state_dir, wait_until


class HostServicesTest(unittest.TestCase):
    def test_a_web_tier_that_never_listens_is_among_the_services_stopped(self):
        # Its address is none of this machine's: it cannot listen. Started, it must be stopped with
        # the rest (run's clean-up stops what is in `services`), even though it never became ready.
        state = state_dir("host-services")
        config = settings.load_config({"FR_STATE_DIR": str(state)})
        services = []
        logs = state / "logs"
        logs.mkdir(parents=True)
        with self.assertRaises(ChildFailed):
            start_host_services(config, child_env(FR_HOST="203.0.113.9", FR_STATE_DIR=state), logs, services)
        self.assertEqual([s.name for s in services], ["web"])
        for service in services:
            service.stop()


class LauncherTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.endpoint = start_moto(cls)
        cls.ec2 = aws(cls.endpoint, "ec2")

    def test_a_hibernated_worker_whose_instance_is_terminated_is_killed(self):
        # A hibernated member's worker is stopped with SIGSTOP (Launcher.step): terminated meanwhile,
        # nothing of it may run on, not even once it would be resumed.
        (instance,) = self.ec2.run_instances(ImageId="ami-0app", MinCount=1, MaxCount=1)["Instances"]
        worker = subprocess.Popen(["sleep", "600"])
        self.addCleanup(worker.kill)
        worker.send_signal(signal.SIGSTOP)
        config = settings.load_config({"FR_ENDPOINT_URL": self.endpoint})
        launcher = Launcher(config, self.ec2, forkserver=None)
        launcher.workers[instance["InstanceId"]] = worker.pid
        launcher.frozen.add(instance["InstanceId"])
        self.ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
        wait_until(
            lambda: pool.instance_states(self.ec2, [instance["InstanceId"]])[instance["InstanceId"]] == "terminated",
            30,
            what="terminated",
        )
        launcher.reap_terminated()
        wait_until(lambda: worker.poll() is not None, 10, what="the worker killed")
        self.assertEqual(worker.returncode, -signal.SIGKILL)
        self.assertEqual(launcher.frozen, set())
        # The launcher's next step (before the fork server says the worker exited) leaves it be:
        # a stop signal to a process gone would fail.
        launcher.forkserver = NoEvents()
        launcher.step()
        self.assertEqual(launcher.stopping, set())

    def test_a_worker_of_an_instance_ec2_no_longer_knows_is_stopped_and_the_step_goes_on(self):
        # moto restarted: every instance id the launcher knew is unknown now.
        worker = subprocess.Popen(["sleep", "600"])
        self.addCleanup(worker.kill)
        config = settings.load_config({"FR_ENDPOINT_URL": self.endpoint})
        launcher = Launcher(config, self.ec2, forkserver=NoEvents())
        launcher.workers["i-0123456789abcdef0"] = worker.pid
        launcher.step()
        wait_until(lambda: worker.poll() is not None, 10, what="the worker told to stop")
        self.assertEqual(worker.returncode, -signal.SIGTERM)
        self.assertEqual(launcher.stopping, {"i-0123456789abcdef0"})


class NoEvents:
    """A fork server that has said nothing yet."""

    def since(self, seen):
        return seen, []


if __name__ == "__main__":
    unittest.main()
