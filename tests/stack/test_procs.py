import unittest

from core import settings
from deploy.provision import Provisioner
from scaling import pool
from simulation.procs import KEEP_LINES, Child, ChildFailed
from tests.support import NO_GUESTS, PYTHON, aws, start_moto


class ChildTest(unittest.TestCase):
    def test_output_is_kept_bounded_and_readers_keep_their_place(self):
        total = KEEP_LINES + 500
        child = Child("printer", [PYTHON, "-c", f"for n in range({total}): print(n)"])
        self.addCleanup(child.stop)
        child.popen.wait(30)
        child._reader.join(10)
        self.assertEqual(child.count, total)
        self.assertEqual(len(child.lines), KEEP_LINES)
        seen, new = child.since(total - 3)
        self.assertEqual((seen, new), (total, [str(total - 3), str(total - 2), str(total - 1)]))
        self.assertEqual(child.since(total), (total, []))
        self.assertEqual(len(child.since(0)[1]), KEEP_LINES, "lines no longer kept are skipped")

    def test_waiting_for_a_line_that_never_comes_fails_with_the_tail(self):
        child = Child("quiet", [PYTHON, "-c", "print('hello', flush=True); import signal; signal.pause()"])
        self.addCleanup(child.stop)
        self.assertEqual(child.wait_for(r"hel(lo)", 10)[1], "lo")
        with self.assertRaisesRegex(ChildFailed, "(?s)no 'bye' within 0.3 s:.*hello"):
            child.wait_for("bye", 0.3)


class MotoServerTest(unittest.TestCase):
    def test_motoserver_lists_moto_services_once_with_the_same_answer(self):
        from moto import backends

        listed = list(backends.list_of_moto_modules())
        import simulation.motoserver  # noqa: F401  (the fix is made on import, as when it runs)

        first = backends.list_of_moto_modules()
        self.assertEqual(list(first), listed)
        self.assertIn("sqs", first)
        self.assertIs(backends.list_of_moto_modules(), first, "listed again")

    def test_plain_moto_as_local_mode_runs_it_takes_the_whole_provisioning(self):
        # `./setup.sh local` without FR_SIMULATE=aws: moto as it is, but for motoserver's fixes
        # (provisioning asks for the default EBS key, which moto 5.2 does not answer).
        endpoint = start_moto(self, name="moto-plain", FR_SIMULATE="")
        config = settings.load_config({"FR_PREFIX": "plain", "FR_ENDPOINT_URL": endpoint, "FR_AMI_ID": "ami-0app", **NO_GUESTS})
        said = []
        Provisioner(config, lambda name: aws(endpoint, name), out=said.append).provision()
        self.assertEqual(len(pool.describe(aws(endpoint, "ec2"), config)), config.pool_size, said)


if __name__ == "__main__":
    unittest.main()
