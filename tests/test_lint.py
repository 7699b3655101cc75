"""The tree is clean under the linter configured in pyproject.toml (ruff, a dev dependency), and no
function outside the tests is longer than a screen."""
import ast
import subprocess
import sys
import unittest

import settings

MAX_LINES = 80


class LintTest(unittest.TestCase):
    def test_the_tree_is_clean_under_ruff(self):
        done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=settings.PROJECT_DIR,
                              capture_output=True, text=True, timeout=120)
        self.assertEqual((done.returncode, done.stdout.strip()), (0, "All checks passed!"), done.stderr)

    def test_no_function_outside_the_tests_is_over_80_lines(self):
        sources = [p for p in settings.PROJECT_DIR.rglob("*.py")
                   if not {".venv", "var", "tests"} & set(p.relative_to(settings.PROJECT_DIR).parts)]
        long = [f"{path.relative_to(settings.PROJECT_DIR)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})"
                for path in sources for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= MAX_LINES]
        self.assertEqual(long, [])


if __name__ == "__main__":
    unittest.main()
