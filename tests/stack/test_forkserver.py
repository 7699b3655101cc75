import os
import signal
import tempfile
import threading
import unittest

from simulation.forkserver import CoreTurns, TakingTurns
from tests.support import wait_until


def holds_flock(pid, inode):
    """Whether process `pid` holds a flock on the file with this inode (/proc/locks)."""
    for line in open("/proc/locks"):
        fields = line.split()
        if "->" not in fields and fields[1] == "FLOCK" and fields[4] == str(pid):
            if int(fields[5].rsplit(":", 1)[1]) == inode:
                return True
    return False


class Model:
    stand_in = True
    weights_sha256 = "f" * 64

    def identify_batch(self, images, every=None, gallery=None):
        return ["Paul"] * len(images)


class CoreTurnsTest(unittest.TestCase):
    def test_a_worker_killed_while_it_holds_a_core_does_not_keep_it(self):
        with tempfile.TemporaryDirectory() as lock_dir:
            cores = CoreTurns(1, lock_dir)
            self.addCleanup(cores.close)
            pid = os.fork()
            if pid == 0:
                with cores.turn():
                    os.kill(os.getpid(), signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            self.assertEqual(os.waitstatus_to_exitcode(status), -signal.SIGKILL)
            answered = []
            model = TakingTurns(Model(), cores)
            thread = threading.Thread(target=lambda: answered.append(model.identify_batch([b"x"])), daemon=True)
            thread.start()
            thread.join(5)
            self.assertEqual(answered, [["Paul"]], "the core stayed taken after its holder died")

    def test_a_worker_killed_while_it_waits_for_a_core_does_not_block_the_others(self):
        with tempfile.TemporaryDirectory() as lock_dir:
            cores = CoreTurns(1, lock_dir)
            self.addCleanup(cores.close)
            ready, told = os.pipe()
            holder = os.fork()
            if holder == 0:
                with cores.turn():
                    os.write(told, b"!")
                    signal.pause()
            self.assertEqual(os.read(ready, 1), b"!")
            waiter = os.fork()
            if waiter == 0:
                with cores.turn():
                    os._exit(0)
            room = os.stat(cores.room_path).st_ino
            wait_until(lambda: holds_flock(waiter, room), 5, what="the waiter in the waiting room")
            answered = []
            model = TakingTurns(Model(), cores)
            thread = threading.Thread(target=lambda: answered.append(model.identify_batch([b"x"])), daemon=True)
            try:
                thread.start()
                thread.join(0.5)
                self.assertEqual(answered, [], "an inference ran while the only core was held")
                for pid in (waiter, holder):
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                thread.join(5)
                self.assertEqual(answered, [["Paul"]], "a killed waiter kept the others waiting")
            finally:
                os.close(ready)
                os.close(told)

    def test_no_more_inferences_at_once_than_cores(self):
        with tempfile.TemporaryDirectory() as lock_dir:
            cores = CoreTurns(2, lock_dir)
            self.addCleanup(cores.close)
            held = []
            children = []
            ready, told = os.pipe()
            for _ in range(2):
                pid = os.fork()
                if pid == 0:
                    with cores.turn():
                        os.write(told, b"!")
                        signal.pause()
                children.append(pid)
            try:
                self.assertEqual(os.read(ready, 1) + os.read(ready, 1), b"!!", "both children hold a core")

                def third():
                    with cores.turn():
                        held.append(1)

                thread = threading.Thread(target=third, daemon=True)
                thread.start()
                thread.join(1)
                self.assertEqual(held, [], "a third inference ran beside two others on two cores")
                os.kill(children[0], signal.SIGKILL)
                thread.join(5)
                self.assertEqual(held, [1])
            finally:
                for pid in children:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    os.waitpid(pid, 0)
                os.close(ready)
                os.close(told)


if __name__ == "__main__":
    unittest.main()
