"""Local mode's fork server: loads torch and the model once, then forks one worker per instance.

Started as 15 fresh processes at once, workers spend most of a minute importing torch on 2 cores
before the first can answer, and each holds its own copy of the model. Forked from one process
that has already loaded it, a worker is ready in milliseconds and shares the loaded pages with its
siblings. Each forked worker runs worker.py's own loop (`worker.serve`) with its own AWS clients,
signal handling and log file, so it behaves as the worker.py of an app instance does; the one
difference is that the workers take turns at this machine's cores (CoreTurns).

Fork safety: this process stays single-threaded (torch is limited to one thread, set before the
model loads, so no OpenMP pool exists at fork time: each worker makes its own) and makes no AWS
call, so no connection exists to be shared; children make their own clients after the fork (see
preload_aws_clients).

Threads: two inferences run at a time, each on both cores, with OpenMP's waiting threads sleeping
(the launcher sets OMP_WAIT_POLICY=PASSIVE): of the ways tried, the fastest on 2 cores beside moto
(a thread moto preempts stalls a whole inference, and spinning threads burn the core moto needs);
docs/performance.md has the numbers.

Protocol, one line each, written and read by the functions below (both sides: the launcher in
simulation/localstack.py uses start_command and parse_event). On stdin: `start INSTANCE_ID NAME [ENDPOINT]` forks a
worker for that instance (its log is FR_STATE_DIR/logs/NAME.log, appended to: the evidence of an
instance's earlier runs stays). On stdout: READY once, then `event=forked
instance=ID pid=PID` and `event=exited instance=ID pid=PID code=CODE`. To stop one worker, SIGTERM
its pid (warm stop, as on an instance). SIGTERM/SIGINT to this process, or its stdin closing, stops
every worker warmly and then exits.
"""

import contextlib
import dataclasses
import fcntl
import logging
import os
import re
import select
import signal
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import common
import worker
from core import heartbeat, settings, statefiles
from simulation.procs import die_with_parent

log = common.EventLog("forkserver")

TICK = 0.2
CORES = os.cpu_count() or 1
CORE_RETRY = 0.005
READY = "event=forkserver_ready"
# In an instance's FR_STATE_DIR: the guest's hibernation agent has finished this boot's work.
AGENT_DONE = "hibinit-agent.done"
EVENT = re.compile(r"event=(forked|exited) instance=(\S+) pid=(\d+)(?: code=(-?\d+))?$")


def start_command(instance_id, name, endpoint=None):
    """The launcher's command: fork a worker for this instance (reaching AWS at `endpoint`, when
    the instance has a network link of its own, else at FR_ENDPOINT_URL)."""
    return f"start {instance_id} {name}" + (f" {endpoint}" if endpoint else "")


def parse_command(line):
    """(instance id, name, endpoint or None) of a start command, or None for any other line."""
    words = line.split()
    if words[:1] == ["start"] and len(words) in (3, 4):
        return words[1], words[2], (words[3] if len(words) == 4 else None)
    return None


@dataclass(frozen=True)
class Event:
    """What the server reports: a worker `forked`, or `exited` with its exit `code`."""

    kind: str
    instance: str
    pid: int
    code: int | None = None

    def line(self):
        code = "" if self.code is None else f" code={self.code}"
        return f"event={self.kind} instance={self.instance} pid={self.pid}{code}"


def parse_event(line):
    """The Event a line of the server's output reports, or None (its log lines, READY)."""
    match = EVENT.search(line)
    if not match:
        return None
    return Event(match[1], match[2], int(match[3]), None if match[4] is None else int(match[4]))


def worker_config(config, name, endpoint=None, instance_id=""):
    """The configuration of the worker of instance `name`: an FR_STATE_DIR of its own (where its
    hibernation hooks' state is, as on an instance of its own, and the file the launcher writes
    when the guest's hibernation agent would have finished its boot work: core/guest.py), the
    instance's id, and `endpoint` when the instance has a network link of its own."""
    state_dir = Path(config.state_dir) / "instances" / name
    return dataclasses.replace(
        config,
        endpoint_url=endpoint or config.endpoint_url,
        state_dir=state_dir,
        instance_id=instance_id,
        agent_done_file=state_dir / AGENT_DONE,
    )


def run_child(config, recognizer, instance_id, name, endpoint=None):
    """In the forked child: become one worker, never return."""
    import torch  # loaded already (the model): imported here so that the launcher can import the protocol

    code = 0
    try:
        die_with_parent()
        log_fd = os.open(statefiles.log_dir(config.state_dir) / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        stop = threading.Event()
        common.stop_on_signals(stop)
        torch.set_num_threads(CORES)
        log.info("worker_forked", name=name, pid=os.getpid())
        if worker.serve(worker_config(config, name, endpoint, instance_id), recognizer, stop):
            code = heartbeat.POWER_OFF_EXIT  # as on AWS: the launcher powers its instance off
    except BaseException:
        log.exception("worker_failed", name=name)
        code = 1
    finally:
        logging.shutdown()
        os._exit(code)


class CoreTurns:
    """Turns at this machine's cores, across processes: at most `cores` holders at a time.

    On AWS each instance has its own cores; here 15 "instances" share this machine's. Fifteen
    inferences at once on 2 cores thrash caches and take far more CPU per image than two at a
    time, so the workers queue for a turn instead. Each turn is a lock file held with flock: the
    kernel releases it when its holder dies, even by kill -9, so a killed worker cannot keep a core
    (a semaphore would stay taken)."""

    def __init__(self, cores, lock_dir):
        self.paths = [Path(lock_dir) / f"core-{n}.lock" for n in range(cores)]
        self.room_path = Path(lock_dir) / "waiting-room.lock"
        for path in (*self.paths, self.room_path):
            path.touch()
        self._files = self._room = None
        self._opened_by = None

    def _locks(self):
        """(the waiting room's file, the turns' files), opened by this process: flock belongs to an
        open file, which fork shares, so each process opens its own."""
        if self._opened_by != os.getpid():
            self._files = [open(path, "rb") for path in self.paths]
            self._room = open(self.room_path, "rb")
            self._opened_by = os.getpid()
        return self._room, self._files

    @contextlib.contextmanager
    def turn(self):
        """Hold a turn for the block."""
        held = self._take()
        try:
            yield
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)

    def _take(self):
        """Hold whichever turn is free first. flock cannot wait for any one of several files, so
        the first waiter tries them all, pausing briefly between tries, while the others wait for
        it in the kernel on the waiting room's lock (13 workers polling cost 2% of the machine)."""
        room, files = self._locks()
        fcntl.flock(room, fcntl.LOCK_EX)
        try:
            pause = threading.Event()
            while True:
                for file in files:
                    try:
                        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        return file
                    except BlockingIOError:
                        continue
                pause.wait(CORE_RETRY)
        finally:
            fcntl.flock(room, fcntl.LOCK_UN)

    def close(self):
        for file in [*(self._files or []), self._room]:
            if file:
                file.close()
        self._files = self._room = self._opened_by = None


class TakingTurns:
    """The model as the forked workers see it: each batch waits for a turn at the cores."""

    def __init__(self, recognizer, turns):
        self.recognizer = recognizer
        self.turns = turns
        self.stand_in = recognizer.stand_in
        self.weights_sha256 = recognizer.weights_sha256

    def identify_batch(self, images, every=None, gallery=None):
        with self.turns.turn():
            return self.recognizer.identify_batch(images, every, gallery)


def preload_aws_clients(config):
    """Build a worker's clients once here and drop them. Making a client parses botocore's service
    models and endpoint rules (a tenth of a second of CPU, far more with 15 workers starting on 2
    cores); the parsed data stays cached in boto3's default session, which every forked worker
    inherits, so its own clients take a tenth of that (docs/performance.md). No call is made: the
    clients never open a connection."""
    worker.clients(config)


class ForkServer:
    def __init__(self, config, recognizer):
        self.config = config
        self.recognizer = recognizer
        self.children = {}  # pid -> instance id
        self.buffer = b""

    def serve(self, stop):
        while not stop.is_set():
            self.reap()
            try:
                readable, _, _ = select.select([0], [], [], TICK)
            except InterruptedError:
                continue
            if readable and not self.read_commands():
                break
        self.stop_all()

    def read_commands(self):
        """Carry out the whole lines read; False when stdin is closed (the launcher is gone)."""
        data = os.read(0, 4096)
        if not data:
            return False
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            command = parse_command(line.decode())
            if command:
                self.fork(*command)
            elif line.strip():
                log.warning("bad_command", line=repr(line))
        return True

    def fork(self, instance_id, name, endpoint):
        pid = os.fork()
        if pid == 0:
            run_child(self.config, self.recognizer, instance_id, name, endpoint)
        self.children[pid] = instance_id
        print(Event("forked", instance_id, pid).line(), flush=True)

    def reap(self):
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.exited(pid, status)

    def stop_all(self):
        for pid in self.children:
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGCONT)  # a hibernated instance's worker is frozen
        while self.children:
            self.exited(*os.waitpid(-1, 0))

    def exited(self, pid, status):
        instance_id = self.children.pop(pid, "?")
        print(Event("exited", instance_id, pid, os.waitstatus_to_exitcode(status)).line(), flush=True)


def main():
    # One torch thread here: no OpenMP pool exists to be broken by fork (each worker sets its own).
    config = dataclasses.replace(settings.load_config_or_exit(), torch_threads=1)
    common.setup_logging(config.log_level)
    stop = threading.Event()
    common.stop_on_signals(stop)
    statefiles.log_dir(config.state_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="face-rec-cores-") as lock_dir:
        turns = CoreTurns(CORES, lock_dir)
        recognizer = TakingTurns(worker.load_recognizer(config), turns)
        preload_aws_clients(config)
        print(f"{READY} pid={os.getpid()} cores={CORES}", flush=True)
        ForkServer(config, recognizer).serve(stop)
        turns.close()


if __name__ == "__main__":
    main()
