"""The tree is clean under the linter configured in pyproject.toml (ruff, a dev dependency) and
formatted by its formatter, no function outside the tests is longer than a screen (nor a module
over 500 lines, a class over 150), and the recognition library imports nothing of the service."""

import ast
import subprocess
import sys
import unittest

from core import settings

MAX_LINES = 80
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 150


def sources():
    """The tree's Python files outside the tests."""
    return [
        p
        for p in settings.PROJECT_DIR.rglob("*.py")
        if not {".venv", "var", "tests"} & set(p.relative_to(settings.PROJECT_DIR).parts)
    ]


class LintTest(unittest.TestCase):
    def test_the_tree_is_clean_under_ruff(self):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--no-cache", "."],
            cwd=settings.PROJECT_DIR,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual((done.returncode, done.stdout.strip()), (0, "All checks passed!"), done.stderr)

    def test_the_tree_is_formatted_by_ruff(self):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", "."],
            cwd=settings.PROJECT_DIR,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)

    def test_no_function_outside_the_tests_is_over_80_lines(self):
        long = [
            f"{path.relative_to(settings.PROJECT_DIR)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})"
            for path in sources()
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= MAX_LINES
        ]
        self.assertEqual(long, [])

    def test_no_module_outside_the_tests_is_over_500_lines_nor_a_class_over_150(self):
        sizes = []
        for path in sources():
            text = path.read_text()
            where = path.relative_to(settings.PROJECT_DIR)
            if text.count("\n") > MAX_MODULE_LINES:
                sizes.append(f"{where} ({text.count(chr(10))} lines)")
            sizes += [
                f"{where}:{node.lineno} class {node.name} ({node.end_lineno - node.lineno + 1})"
                for node in ast.walk(ast.parse(text))
                if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES
            ]
        self.assertEqual(sizes, [])

    def test_the_model_library_imports_no_module_of_the_service(self):
        root = settings.PROJECT_DIR
        service = {p.stem for p in root.glob("*.py")} | {p.parent.name for p in root.glob("*/__init__.py")} - {"model"}
        imported = {}
        for path in (root / "model").glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom) and not node.level
                    else []
                )
                for name in names:
                    imported.setdefault(name.split(".")[0], set()).add(path.name)
        self.assertEqual({name: files for name, files in imported.items() if name in service}, {})

    def test_the_model_files_are_hashed_without_torch(self):
        # The web tier fingerprints the model (results table) and never loads torch.
        done = subprocess.run(
            [sys.executable, "-c", "import sys, web; from webtier import results, uploads; print('torch' in sys.modules)"],
            cwd=settings.PROJECT_DIR,
            capture_output=True,
            text=True,
        )
        self.assertEqual(done.stdout.strip(), "False", done.stderr)


if __name__ == "__main__":
    unittest.main()
