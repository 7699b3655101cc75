"""The network link of a simulated app instance: a TCP relay between one worker and moto whose
connections can all be cut at once. The local launcher (tools/localstack.py) gives each worker its
own link on the AWS-like stack, and cuts it when the instance hibernates: on AWS, an instance's
TCP connections do not survive hours of hibernation, and a long poll in flight when it froze is
answered to nobody. The tests use it to freeze a worker the same way.
"""
import logging
import socket
import threading

log = logging.getLogger("netlink")

CHUNK = 64 * 1024


class Link:
    """Listens on 127.0.0.1 (`url`) and relays each connection to `upstream` (host, port)."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._open = set()  # every socket of a relayed connection, both ends
        self.requests = 0  # chunks relayed towards upstream: a request sent shows here
        threading.Thread(target=self._accept, name="link-accept", daemon=True).start()

    def cut(self):
        """End every connection open now, at both ends: the worker finds its connections closed
        (a request in flight fails, and botocore retries it on a new one) and moto answers nobody."""
        with self._lock:
            sockets, self._open = self._open, set()
        for sock in sockets:
            _end(sock)
        log.info("event=link_cut connections=%d", len(sockets) // 2)

    def close(self):
        self.listener.close()
        self.cut()

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
                self._open |= {near, far}
            for source, sink, outward in ((near, far, True), (far, near, False)):
                threading.Thread(target=self._pump, args=(source, sink, outward), name="link-pump",
                                 daemon=True).start()

    def _pump(self, source, sink, outward):
        """Copy one direction; when it ends, the whole connection ends (HTTP needs no half-close)."""
        try:
            while data := source.recv(CHUNK):
                sink.sendall(data)
                self.requests += outward
        except OSError:
            pass
        with self._lock:
            self._open -= {source, sink}
        _end(sink)
        source.close()


def _end(sock):
    """Shut a socket down (waking a thread blocked reading it), then close it."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
