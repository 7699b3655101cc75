"""The network link of a simulated app instance: a TCP relay between one worker and moto whose
connections can all be cut at once, as hibernation cuts them. The local launcher
(simulation/localstack.py) gives each worker its own link on the AWS-like stack and cuts it when the
instance hibernates; the tests use it to freeze a worker the same way.

What a cut does is what hours of hibernation do to an instance's TCP connections: the far end
(moto) answers into nothing (a long poll in flight hands its messages to nobody), and no word of
it reaches the instance, whose whole kernel was frozen: its side of each connection still looks
open. A call waiting for an answer on one waits until its read timeout; a new request sent on one
is answered with a reset (the server has long forgotten the connection), and botocore retries it.
"""

import socket
import threading
from contextlib import suppress

import common

log = common.EventLog("netlink")

CHUNK = 64 * 1024


class Link:
    """Listens on 127.0.0.1 (`url`) and relays each connection to `upstream` (host, port)."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._relayed = {}  # the worker's end of each connection relayed now -> moto's end
        self._cut = set()  # the worker's ends of connections cut: silent until used, then reset
        self.requests = 0  # chunks relayed towards moto: a request sent shows here
        threading.Thread(target=self._accept, name="link-accept", daemon=True).start()

    def cut(self):
        """Cut every connection relayed now (see the module's docstring)."""
        with self._lock:
            relayed, self._relayed = self._relayed, {}
            self._cut |= relayed.keys()
        for far in relayed.values():
            _close(far)
        log.info("link_cut", connections=len(relayed))

    def close(self):
        self.listener.close()
        self.cut()
        with self._lock:
            cut, self._cut = self._cut, set()
        for near in cut:
            _close(near)

    def _accept(self):
        while True:
            try:
                near, _ = self.listener.accept()
            except OSError:
                return
            try:
                far = socket.create_connection(self.upstream)
            except OSError:
                near.close()
                continue
            with self._lock:
                self._relayed[near] = far
            threading.Thread(target=self._outward, args=(near, far), name="link-out", daemon=True).start()
            threading.Thread(target=self._inward, args=(near, far), name="link-in", daemon=True).start()

    def _outward(self, near, far):
        """The worker's requests to moto; after a cut, the first byte the worker sends is reset."""
        try:
            while data := near.recv(CHUNK):
                if self._is_cut(near):
                    self._reset(near)
                    return
                far.sendall(data)
                self.requests += 1
        except OSError:
            if self._is_cut(near):
                self._reset(near)
                return
        self._end(near, far)

    def _inward(self, near, far):
        """moto's answers to the worker; after a cut, nothing more reaches it."""
        try:
            while data := far.recv(CHUNK):
                near.sendall(data)
        except OSError:
            pass
        if not self._is_cut(near):
            self._end(near, far)

    def _is_cut(self, near):
        with self._lock:
            return near in self._cut

    def _reset(self, near):
        """Close with a reset: what a peer that has forgotten the connection answers."""
        with self._lock:
            self._cut.discard(near)
        with suppress(OSError):
            near.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        near.close()

    def _end(self, near, far):
        """A connection one side closed: close both (HTTP needs no half-close)."""
        with self._lock:
            self._relayed.pop(near, None)
            self._cut.discard(near)
        _close(far)
        _close(near)


def _close(sock):
    """Shut a socket down (waking a thread blocked reading it), then close it."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
