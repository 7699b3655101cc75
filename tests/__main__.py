"""`python -m tests`: the whole suite; `python -m tests unit`: the tests that start no process (in
seconds, for while you work). Both end with a plain `N passed, N failed, N skipped` line."""
import sys
import unittest

import common

# Pure code and the model library in this process: no moto, no service, no stack.
UNIT = [
    "tests.test_common", "tests.test_scaling_decision", "tests.test_multipart", "tests.test_lint", "tests.test_model",
    "tests.test_forkserver.ProtocolTest", "tests.test_reliability.DeadLetterTest", "tests.test_reliability.PendingTest",
]


def main(argv):
    loader = unittest.defaultTestLoader
    if argv == ["unit"]:
        suite = loader.loadTestsFromNames(UNIT)
    elif not argv:
        suite = loader.discover(str(common.PROJECT_DIR / "tests"), top_level_dir=str(common.PROJECT_DIR))
    else:
        print("usage: python -m tests [unit]", file=sys.stderr)
        return 2
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    passed = result.testsRun - failed - len(result.skipped)
    print(f"tests: {passed} passed, {failed} failed, {len(result.skipped)} skipped")
    return 0 if result.wasSuccessful() and result.testsRun else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
