"""`python -m tests`: the whole suite, ending with a plain `N passed, N failed, N skipped` line."""
import sys
import unittest

import common


def main():
    suite = unittest.defaultTestLoader.discover(str(common.PROJECT_DIR / "tests"), top_level_dir=str(common.PROJECT_DIR))
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    passed = result.testsRun - failed - len(result.skipped)
    print(f"tests: {passed} passed, {failed} failed, {len(result.skipped)} skipped")
    return 0 if result.wasSuccessful() and result.testsRun else 1


if __name__ == "__main__":
    sys.exit(main())
