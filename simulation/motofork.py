"""moto servers forked from one process that has imported moto: what the test suite starts moto with.

A moto server (simulation/motoserver.py) spends about 1.3 s of CPU importing moto and botocore's
models before it answers anything; the suite starts about 36 of them, on two cores. `python -m
tests` starts one fork server for the whole run (`serve`), which imports simulation.motoserver once
and forks a fresh moto for each start; each forked server imports nothing more, begins with empty
backends (the fork server never makes a call), and runs motoserver.run, as a started one does.

`python -m simulation.motofork ARGS` (simulation/localstack.py's MOTO_SERVER) is the command for a
moto server with moto_server's ARGS: with MOTO_FORK_SOCKET naming a fork server that answers, it
hands its arguments, environment, working directory and standard streams to it and stands for the
forked server: the signals it gets are passed on, and it ends as the server ends, with its status.
A server whose stand-in is gone (killed with SIGKILL) kills itself. With no fork server (local
mode, a test run alone with `--job`, the benchmark) it runs the server itself: the same code.

MOTO_FORK_SOCKET is the test runner's, not the service's (so not an FR_* setting: child_env keeps
it, as it keeps PATH). Protocol, written and read here only: the stand-in sends one message (an
8-byte length, then JSON {argv, env, cwd}) with its fds 0, 1 and 2; the fork server answers the
lines `pid PID`, then `code CODE` (the exit code, negative for a signal) when the server ends.
"""

import contextlib
import json
import os
import select
import signal
import socket
import sys

ENVIRONMENT = "MOTO_FORK_SOCKET"
READY = "event=motofork_ready"
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STREAMS = (0, 1, 2)
# The services the stack calls: their botocore models, which moto reads at a service's first call
# (0.03-0.12 s of CPU each), are read once, in the fork server.
SERVICES = ("ec2", "sqs", "s3", "iam", "dynamodb", "ssm", "kms", "sts", "logs", "sns", "cloudwatch", "budgets")


def send_request(connection, argv, env, cwd):
    payload = json.dumps({"argv": argv, "env": env, "cwd": cwd}).encode()
    socket.send_fds(connection, [len(payload).to_bytes(8, "big") + payload], list(STREAMS))


def receive_request(connection):
    """(the request, the fds sent with it), or None if the stand-in hung up first."""
    data, fds, _, _ = socket.recv_fds(connection, 1 << 16, len(STREAMS))
    while 8 <= len(data) < 8 + int.from_bytes(data[:8], "big") or 0 < len(data) < 8:
        more = connection.recv(1 << 16)
        if not more:
            break
        data += more
    if len(data) < 8 or len(data) != 8 + int.from_bytes(data[:8], "big") or len(fds) != len(STREAMS):
        for fd in fds:
            os.close(fd)
        return None
    return json.loads(data[8:]), fds


def stand_in(path, argv):
    """Have the fork server at `path` run a moto server with `argv`, and stand for it: its exit
    code, or None when no fork server answers there."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(path)
    except OSError:
        connection.close()
        return None
    send_request(connection, argv, dict(os.environ), os.getcwd())
    replies = connection.makefile("r")
    said = replies.readline().split()
    if said[:1] != ["pid"]:
        return 1
    pid = int(said[1])

    def forward(signum, frame):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    said = replies.readline().split()
    code = int(said[1]) if said[:1] == ["code"] else 1
    if code < 0:  # ended by a signal: so does the stand-in, as a started server would
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


def become_server(request, fds, connection, closing):
    """In the forked child: the moto server of `request`, never returning."""
    code = 1
    try:
        for fd in closing:
            os.close(fd)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for stream, fd in zip(STREAMS, fds):
            os.dup2(fd, stream)
            os.close(fd)
        sys.stdout.reconfigure(line_buffering=True)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        sys.argv = request["argv"]
        import random
        import threading

        from moto.moto_api._internal import mock_random

        from simulation import motoserver

        random.seed()  # a random stream of its own, not its siblings' copy of the fork server's
        mock_random.seed()

        def watch():  # the stand-in gone (it never writes): so is this server
            connection.recv(1)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, name="stand-in", daemon=True).start()
        motoserver.run(request["argv"][1:])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(path):
    """The fork server: listen at `path` until SIGTERM; then say the CPU its servers used."""
    import resource

    from moto.core.utils import get_service_model

    import simulation.motoserver  # noqa: F401  (moto imported and fixed, once for every server)

    for service in SERVICES:
        get_service_model(service)

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    stopping = []
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    servers = {}  # pid -> the connection of its stand-in
    print(READY, flush=True)
    while not stopping:
        ready, _, _ = select.select([listener, wake_read], [], [])
        if wake_read in ready:
            os.read(wake_read, 4096)
        reap(servers)
        if listener in ready:
            connection, _ = listener.accept()
            received = receive_request(connection)
            if received is None:
                connection.close()
                continue
            request, fds = received
            pid = os.fork()
            if pid == 0:
                others = [c.fileno() for c in servers.values()]
                become_server(request, fds, connection, [listener.fileno(), wake_read, wake_write, *others])
            for fd in fds:
                os.close(fd)
            servers[pid] = connection
            connection.sendall(f"pid {pid}\n".encode())
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"event=motofork_stopped servers_cpu={used.ru_utime + used.ru_stime:.1f}", flush=True)


def reap(servers):
    """Tell each stand-in whose server has ended its exit code."""
    while servers:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        connection = servers.pop(pid, None)
        if connection is not None:
            try:
                connection.sendall(f"code {os.waitstatus_to_exitcode(status)}\n".encode())
            except OSError:
                pass  # its stand-in is gone already
            connection.close()


def main(argv):
    if argv[:1] == ["serve"] and len(argv) == 2:
        serve(argv[1])
        return 0
    path = os.environ.get(ENVIRONMENT)
    code = stand_in(path, [sys.argv[0], *argv]) if path else None
    if code is None:
        from simulation import motoserver

        motoserver.run(argv)
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
