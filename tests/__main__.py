"""`python -m tests`: the whole suite; `python -m tests unit`: the tests that start no process (in
seconds, for while you work). Both print the slowest test classes (with their set-up: where the
suite's time goes), then end with a plain `N passed, N failed, N skipped` line."""
import sys
import time
import unittest
from collections import defaultdict

import common

# Pure code and the model library in this process: no moto, no service, no stack.
UNIT = [
    "tests.test_common", "tests.test_scaling_decision", "tests.test_multipart", "tests.test_lint", "tests.test_model",
    "tests.test_forkserver.ProtocolTest", "tests.test_reliability.DeadLetterTest", "tests.test_reliability.PendingTest",
]


class TimedResult(unittest.TextTestResult):
    """Seconds by test class, from the end of one test to the end of the next: a class's set-up is
    counted with it, its clean-up with the class after it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.last = time.monotonic()
        self.seconds = defaultdict(float)

    def stopTest(self, test):
        super().stopTest(test)
        now = time.monotonic()
        self.seconds[test.id().rsplit(".", 1)[0]] += now - self.last
        self.last = now


def main(argv):
    loader = unittest.defaultTestLoader
    if argv == ["unit"]:
        suite = loader.loadTestsFromNames(UNIT)
    elif not argv:
        suite = loader.discover(str(common.PROJECT_DIR / "tests"), top_level_dir=str(common.PROJECT_DIR))
    else:
        print("usage: python -m tests [unit]", file=sys.stderr)
        return 2
    result = unittest.TextTestRunner(verbosity=2, resultclass=TimedResult).run(suite)
    for name, seconds in sorted(result.seconds.items(), key=lambda item: -item[1])[:12]:
        print(f"slowest: {seconds:6.1f} s  {name}")
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    passed = result.testsRun - failed - len(result.skipped)
    print(f"tests: {passed} passed, {failed} failed, {len(result.skipped)} skipped")
    return 0 if result.wasSuccessful() and result.testsRun else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
