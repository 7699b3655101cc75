"""Child processes for the local stack and the tests: start, wait for a log line, stop.

Each child's stdout and stderr are read by a thread into memory (and a log file when given), so a
caller waits on a readiness line with a deadline instead of sleeping, and a failure shows the
child's last lines.
"""

import ctypes
import re
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path

PR_SET_PDEATHSIG = 1
# A long-running child (moto logs every call) must not fill memory: older lines are in its log file.
KEEP_LINES = 5000


class ChildFailed(RuntimeError):
    pass


def children_by_parent():
    """{parent pid: [child pids]} of every process on the machine, from /proc."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    return children


def descendants(root):
    """Pids of every process below `root`."""
    children = children_by_parent()
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid):
    """True while `pid` runs (a zombie, exited but not reaped, is not alive)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def die_with_parent():
    """In the child before exec: SIGTERM when the parent dies, so a killed stack leaves nothing behind."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    def __init__(self, name, args, env=None, log_path=None, cwd=None, commands=False):
        """`commands`: give the child a stdin pipe for `send`."""
        self.name = name
        self._lines = deque(maxlen=KEEP_LINES)
        self.count = 0  # lines read so far, including those no longer kept
        self._changed = threading.Condition()
        self._log = open(log_path, "a", buffering=1) if log_path else None
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdin=subprocess.PIPE if commands else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            # Own process group: a Ctrl-C reaches only the parent, which stops children in order.
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self._reader = threading.Thread(target=self._read, name=f"read-{name}", daemon=True)
        self._reader.start()

    @property
    def pid(self):
        return self.popen.pid

    def _read(self):
        for line in self.popen.stdout:
            if self._log:
                self._log.write(line)
            with self._changed:
                self._lines.append(line.rstrip("\n"))
                self.count += 1
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def since(self, seen):
        """(lines read so far, the kept lines read after the first `seen`): a cursor for readers."""
        with self._changed:
            new = min(self.count - seen, len(self._lines))
            return self.count, list(self._lines)[len(self._lines) - new :]

    @property
    def lines(self):
        """The last KEEP_LINES lines."""
        with self._changed:
            return list(self._lines)

    def wait_for(self, pattern, timeout):
        """The first match of regex `pattern` in the output, waiting up to `timeout` s."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                seen, lines = self.since(seen)
                for line in lines:
                    match = regex.search(line)
                    if match:
                        return match
                if not self._reader.is_alive():
                    raise ChildFailed(f"{self.name} exited ({self.popen.poll()}) before {pattern!r}:\n{self.tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ChildFailed(f"{self.name}: no {pattern!r} within {timeout} s:\n{self.tail()}")
                self._changed.wait(left)

    def send(self, line):
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def tail(self, count=30):
        return "\n".join(self.lines[-count:])

    def signal(self, signum=signal.SIGTERM):
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def stop(self, grace=15):
        """SIGTERM, then SIGKILL after `grace` seconds; the exit status."""
        self.signal(signal.SIGTERM)
        if self.popen.stdin:
            self.popen.stdin.close()
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self._reader.join(5)
        self.popen.stdout.close()
        if self._log:
            self._log.close()
            self._log = None
        return self.popen.returncode
