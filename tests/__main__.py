"""`python -m tests`: the whole suite; `python -m tests unit`: the tests that start no process (in
seconds, for while you work). Both print the slowest test classes (with their set-up: where the
suite's time goes) and tests (the whole suite also the jobs that used the most CPU), then end
with a plain `N passed, N failed, N skipped in N s` line.

The whole suite runs its test classes as separate processes, LANES at a time: much of a class's
time is spent waiting on the processes it started (moto's simulated delays, timeouts, a long
poll), so four lanes keep the two cores busy (two: 554 s, three: 423 s, on 2026-11-30; three: 545 s,
four: 486 s, on 2026-12-03, with the suite grown meanwhile; past that the cores are full: the
suite's time is then its CPU, which the `most CPU:` lines break down). Every
class starts its own processes on ports of its own (port 0) with state and logs of its own, so
classes never share anything but the machine. The pure tests (UNIT) are one job: they import
torch once. The SLOW classes are started first, so that no lane is left with a long class at the
end."""

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed

from core import settings
from simulation import motofork
from simulation.procs import Child
from tools.harness import stand_in_files

# Pure code and the model library in this process (no moto, no service, no stack): the tests in
# tests/unit; every other test starts processes (tests/stack).
UNIT = "tests.unit."
LANES = 4
# The classes that take 20 s or more, longest first (the "slowest class:" lines of a run): started
# first, so that the lanes end together. A class not named here starts after these.
SLOW = [
    "tests.stack." + name
    for name in (
        "test_deploy.ProvisionTest",
        "test_scaling.ScalingTest",
        "test_deploy.RestartableProvisionTest",
        "test_reliability.FaultTest",
        "test_pipeline.PipelineTest",
        "test_reliability.HibernationTest",
        "test_first_run.FirstRunTest",
        "test_scaling.WarmFloorTest",
        "test_pages.PagesTest",
        "test_control.LostMessagesTest",
        "test_deploy.ProvisionAfterTeardownTest",
        "test_awslike.AwsLikeTest",
        "test_control.WebTierCrashTest",
        "test_results.ResultsTableTest",
        "test_people.PeopleTest",
        "test_scaling.LocalStackTest",
        "test_first_run.RedeployTest",
        "test_reliability.BadInputTest",
        "test_reliability.MotoRestartTest",
        "test_reliability.InstanceStartTest",
        "test_clients.ClientLimitsTest",
        "test_reliability.EarlyStartTest",
        "test_faces.FacesTest",
        "test_scaling.PoolObservationTest",
        "test_pool.RestartedRepairTest",
    )
]
JOB_RESULT = "job-result: "
CPU = "cpu:"  # a job's CPU seconds, by its first class (run_job)


class TimedResult(unittest.TextTestResult):
    """Seconds by test class, from the end of one test to the end of the next (a class's set-up is
    counted with it, its clean-up with the class after it), and by test."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.last = time.monotonic()
        self.seconds = defaultdict(float)

    def startTest(self, test):
        super().startTest(test)
        self.test_started = time.monotonic()

    def stopTest(self, test):
        super().stopTest(test)
        now = time.monotonic()
        self.seconds[test.id().rsplit(".", 1)[0]] += now - self.last
        self.seconds[test.id()] = now - self.test_started
        self.last = now


def run(names):
    """Run the tests `names` here: (passed, failed, skipped, {class: seconds})."""
    suite = unittest.defaultTestLoader.loadTestsFromNames(names)
    result = unittest.TextTestRunner(verbosity=2, resultclass=TimedResult, stream=sys.stdout).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    passed = result.testsRun - failed - len(result.skipped)
    return passed, failed, len(result.skipped), dict(result.seconds)


def classes():
    """Every test class's name, discovered (tests/unit and tests/stack), sorted."""
    found = set()
    pending = [unittest.defaultTestLoader.discover(str(settings.PROJECT_DIR / "tests"), top_level_dir=str(settings.PROJECT_DIR))]
    while pending:
        for item in pending.pop():
            if isinstance(item, unittest.TestSuite):
                pending.append(item)
            else:
                found.add(item.id().rsplit(".", 1)[0])
    return sorted(found)


def jobs():
    """The suite as jobs, one process each: the SLOW classes, the UNIT tests, then every other
    class alone."""
    found = classes()
    unit = [c for c in found if c.startswith(UNIT)]
    return [[c] for c in SLOW if c in found] + [unit] + [[c] for c in found if c not in unit and c not in SLOW]


def run_job(names):
    """Run `names` in a child process: (its output, (passed, failed, skipped, seconds)); the
    seconds include the CPU seconds the job and the processes it waited for used, as `cpu:` + the
    first class's name (on two cores, the suite's time is mostly the sum of these)."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests", "--job", *names],
        cwd=settings.PROJECT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    with child.stdout:
        output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)  # as child.wait() would, with what it used
    child.returncode = os.waitstatus_to_exitcode(status)
    last = output.rstrip().rsplit("\n", 1)[-1]
    if child.returncode not in (0, 1) or not last.startswith(JOB_RESULT):
        return output + f"\njob {names} ended with code {child.returncode}\n", (0, 1, 0, {})
    passed, failed, skipped, seconds = json.loads(last[len(JOB_RESULT) :])
    seconds[CPU + names[0]] = usage.ru_utime + usage.ru_stime
    return output, (passed, failed, skipped, seconds)


@contextlib.contextmanager
def moto_fork_server(seconds):
    """One fork server for every moto of the run (simulation/motofork.py), named to the jobs by
    MOTO_FORK_SOCKET; when it stops, the CPU of the servers it forked goes into `seconds`."""
    with tempfile.TemporaryDirectory(prefix="motofork-") as folder:
        path = os.path.join(folder, "socket")
        server = Child("motofork", [sys.executable, "-m", "simulation.motofork", "serve", path], cwd=settings.PROJECT_DIR)
        try:
            server.wait_for(motofork.READY, 60)
            os.environ[motofork.ENVIRONMENT] = path
            yield
        finally:
            os.environ.pop(motofork.ENVIRONMENT, None)
            server.stop()
            stopped = [line for line in server.lines if "event=motofork_stopped" in line]
            if stopped:
                seconds[CPU + "moto servers (forked by simulation.motofork)"] = float(stopped[-1].rsplit("=", 1)[1])


def run_all():
    """Every job, LANES at a time, each one's output printed whole as it ends; the totals."""
    stand_in_files()  # made once here, not by two jobs at once
    totals, seconds = [0, 0, 0], {}
    with moto_fork_server(seconds), ThreadPoolExecutor(LANES) as lanes:
        for job in as_completed([lanes.submit(run_job, names) for names in jobs()]):
            output, (passed, failed, skipped, spent) = job.result()
            print(output, flush=True)
            totals = [a + b for a, b in zip(totals, (passed, failed, skipped))]
            seconds.update(spent)
    return (*totals, seconds)


def main(argv):
    started = time.monotonic()
    if argv[:1] == ["--job"]:
        passed, failed, skipped, seconds = run(argv[1:])
        print(JOB_RESULT + json.dumps([passed, failed, skipped, seconds]))
        return 0 if failed == 0 else 1
    if argv == ["unit"]:
        passed, failed, skipped, seconds = run([c for c in classes() if c.startswith(UNIT)])
    elif not argv:
        passed, failed, skipped, seconds = run_all()
    else:
        print("usage: python -m tests [unit]", file=sys.stderr)
        return 2
    ranked = sorted(seconds.items(), key=lambda item: -item[1])
    for kind, dots in (("class", 3), ("test", 4)):  # tests.folder.test_module.Class[.test_name]
        for name, spent in [(name, spent) for name, spent in ranked if name.count(".") == dots and CPU not in name][:12]:
            print(f"slowest {kind}: {spent:6.1f} s  {name}")
    cpu = [(name[len(CPU) :], spent) for name, spent in ranked if name.startswith(CPU)]
    for name, spent in cpu[:12]:
        print(f"most CPU:      {spent:6.1f} s  {name}")
    if cpu:
        print(f"CPU in all: {sum(spent for _, spent in cpu):.0f} s")
    print(f"tests: {passed} passed, {failed} failed, {skipped} skipped in {time.monotonic() - started:.0f} s")
    return 0 if failed == 0 and passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
