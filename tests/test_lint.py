"""The tree is clean under the linter configured in pyproject.toml (ruff, a dev dependency)."""
import subprocess
import sys
import unittest

import settings


class LintTest(unittest.TestCase):
    def test_the_tree_is_clean_under_ruff(self):
        done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=settings.PROJECT_DIR,
                              capture_output=True, text=True, timeout=120)
        self.assertEqual((done.returncode, done.stdout.strip()), (0, "All checks passed!"), done.stderr)


if __name__ == "__main__":
    unittest.main()
