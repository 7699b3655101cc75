"""Hostile and careless clients against the real web tier: what a client can hold (threads,
connections, CPU) is bounded, and every request gets an answer."""

import os
import selectors
import socket
import threading
import time
import unittest
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from urllib.parse import urlsplit

import web
from core import settings
from tests.support import IMAGES, Service, multipart, raw_request, upload, wait_until
from webtier.connection import LINGER_SECONDS

GOOD = (IMAGES / "test_00.jpg").read_bytes()
GOOD_ANSWER = (200, "test_00:Paul\n")
RECEIVE_DEADLINE = 3
MAX_CONNECTIONS = 320
DRIBBLERS = 300


def connect(url, timeout=30):
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=timeout)


def read_all(connection):
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


def rss_mib(pid):
    """A process's resident memory (MiB), as the kernel counts it."""
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) / 1024


def upload_head(length, extra=""):
    return (
        f"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=BOUNDARY\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


class Dribblers:
    """Clients that each send a byte every `every` seconds and never finish; records when each
    connection ends and what it was answered."""

    def __init__(self, url, count, first, every=0.5):
        self.selector = selectors.DefaultSelector()
        self.every = every
        self.opened = time.monotonic()
        self.ended = {}  # connection -> (seconds after opening, bytes received)
        self.connections = []
        for _ in range(count):
            connection = connect(url)
            connection.sendall(first)
            connection.setblocking(False)
            self.connections.append(connection)
            self.selector.register(connection, selectors.EVENT_READ)

    def run(self, deadline):
        """Dribble until every connection ended or `deadline` seconds passed."""
        next_byte = time.monotonic()
        while len(self.ended) < len(self.connections) and time.monotonic() - self.opened < deadline:
            for key, _ in self.selector.select(max(0.0, next_byte - time.monotonic())):
                self._read(key.fileobj)
            if time.monotonic() >= next_byte:
                next_byte += self.every
                for connection in self.connections:
                    if connection not in self.ended:
                        try:
                            connection.send(b"x")
                        except OSError:
                            self._read(connection)

    def _read(self, connection):
        try:
            data = connection.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        answered = self.ended.get(connection, (None, b""))[1] + data
        if data:
            self.ended[connection] = (time.monotonic() - self.opened, answered)
        else:
            self.selector.unregister(connection)
            self.ended.setdefault(connection, (time.monotonic() - self.opened, answered))

    def close(self):
        for connection in self.connections:
            connection.close()
        self.selector.close()


class ClientLimitsTest(Service, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.start_service(FR_RECEIVE_DEADLINE=RECEIVE_DEADLINE, FR_CLIENT_TIMEOUT=2, FR_MAX_CONNECTIONS=MAX_CONNECTIONS)

    def tearDown(self):
        tracebacks = [line for line in self.web.lines if "Traceback" in line]
        self.assertEqual(tracebacks, [], "the web tier logs one line per event, never a traceback")
        # Every connection of the test is gone: the next test has the whole limit.
        wait_until(lambda: upload(self.url, "test_00.jpg", GOOD) == GOOD_ANSWER, 30, interval=0.2, what="a good upload answered")

    def test_clients_sending_a_byte_a_second_are_cut_at_the_deadline_and_a_good_request_is_answered(self):
        # 299 dribble a body of 1 MiB, 1 its headers.
        dribblers = Dribblers(self.url, DRIBBLERS - 1, upload_head(1024 * 1024))
        dribblers.connections.append(connect(self.url))
        dribblers.connections[-1].sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
        dribblers.connections[-1].setblocking(False)
        dribblers.selector.register(dribblers.connections[-1], selectors.EVENT_READ)
        self.addCleanup(dribblers.close)
        with ThreadPoolExecutor(1) as pool:
            good = pool.submit(upload, self.url, "test_00.jpg", GOOD)
            dribblers.run(deadline=RECEIVE_DEADLINE + 20)
            self.assertEqual(good.result(), GOOD_ANSWER)
        self.assertEqual(len(dribblers.ended), DRIBBLERS, "every dribbling connection closed")
        late = {seconds for seconds, _ in dribblers.ended.values() if seconds > RECEIVE_DEADLINE + 5}
        self.assertEqual(late, set(), f"closed long after the {RECEIVE_DEADLINE} s deadline")
        answers = {answered.split(b"\r\n", 1)[0] for _, answered in dribblers.ended.values()}
        self.assertEqual(answers, {b"HTTP/1.1 408 Request Timeout"})

    def test_after_an_early_answer_a_dribbling_client_holds_its_thread_no_longer_than_a_moment(self):
        # Answered 404 at once, then still sending a byte every 0.3 s of the body it promised.
        connections = [connect(self.url) for _ in range(20)]
        self.addCleanup(lambda: [connection.close() for connection in connections])
        opened = time.monotonic()
        for connection in connections:
            connection.sendall(b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
            connection.setblocking(False)
        answers, closed = {}, {}
        while len(closed) < len(connections) and time.monotonic() - opened < RECEIVE_DEADLINE + 10:
            for connection in connections:
                if connection in closed:
                    continue
                try:
                    # The answer, then EOF: the server has shut its side (it still reads ours).
                    while data := connection.recv(65536):
                        answers[connection] = answers.get(connection, b"") + data
                except (BlockingIOError, ConnectionResetError):
                    pass
                try:
                    connection.send(b"x")
                except OSError:  # reset: the server has closed the connection (a send's RST came back)
                    closed[connection] = time.monotonic() - opened
            threading.Event().wait(0.3)  # the client's own pace: a byte every 0.3 s
        self.assertEqual(len(closed), 20, "every connection closed by the server")
        self.assertEqual({a.split(b"\r\n", 1)[0] for a in answers.values()}, {b"HTTP/1.1 404 Not Found"})
        self.assertLess(max(closed.values()), LINGER_SECONDS + 1.5, "seconds a connection was held")

    def test_an_upload_of_many_parts_costs_the_memory_of_one_and_gives_it_back(self):
        # 20 clients, each a 10 MiB body of 16 parts of 655 KB, all but its last 200 bytes sent: once
        # sendall returns, the web tier has read all of it but what the socket buffers hold.
        content_type, body = multipart([("inputFile", f"{n}.jpg", b"x" * 655_000) for n in range(16)], "BOUNDARY")
        before = rss_mib(self.web.pid)
        peak, connections = before, []
        self.addCleanup(lambda: [connection.close() for connection in connections])
        for _ in range(20):
            connections.append(connect(self.url))
            connections[-1].sendall(upload_head(len(body)) + body[:-200])
            peak = max(peak, rss_mib(self.web.pid))
        self.assertLess(peak - before, 60, f"MiB the web tier grew by (from {before:.0f} MiB)")
        for connection in connections:
            connection.close()
        wait_until(lambda: rss_mib(self.web.pid) - before < 30, 10, what="the memory given back")

    def test_a_flood_of_health_checks_costs_sqs_little(self):
        calls = self.moto.count
        with ThreadPoolExecutor(100) as clients:
            answers = list(clients.map(lambda _: raw_request(self.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"), range(100)))
        self.assertEqual(set(answers), {(200, "ok\n")})
        # Two calls per check, made at most once a second (the pollers and the chart add a few).
        self.assertLess(self.moto.count - calls, 30, "calls to moto for 100 health checks")

    def test_past_the_connection_limit_a_client_gets_503_at_once_and_the_service_recovers(self):
        silent = [connect(self.url) for _ in range(MAX_CONNECTIONS)]
        self.addCleanup(lambda: [connection.close() for connection in silent])
        # The server accepts (and counts) connections in order: the one past the limit is refused.
        status, body = wait_until(lambda: self._answer_past_the_limit(), 10, what="a 503")
        self.assertEqual((status, body), (503, f"too many connections (limit {MAX_CONNECTIONS}), try again\n"))
        # The silent ones are cut at the deadline; then there is room again (tearDown checks an upload).
        answers = {read_all(connection).split(b"\r\n", 1)[0] for connection in silent}
        self.assertEqual(answers, {b"HTTP/1.1 408 Request Timeout"})

    def _answer_past_the_limit(self):
        status, body = raw_request(self.url, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", timeout=10)
        return (status, body) if status == 503 else None

    def test_expect_100_continue_is_answered_before_the_body_is_sent(self):
        content_type, body = multipart([("inputFile", "test_00.jpg", GOOD)], boundary="BOUNDARY")
        with connect(self.url) as connection:
            connection.sendall(upload_head(len(body), "Expect: 100-continue\r\n"))
            self.assertEqual(connection.recv(4096), b"HTTP/1.1 100 Continue\r\n\r\n")
            connection.sendall(body)
            answer = read_all(connection)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer)
        self.assertTrue(answer.endswith(b"\r\n\r\ntest_00:Paul\n"), answer)

    def test_an_upload_too_large_is_refused_before_its_body_is_sent(self):
        with connect(self.url) as connection:
            connection.sendall(upload_head(100 * 1024 * 1024, "Expect: 100-continue\r\n"))
            answer = read_all(connection)
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer)
        self.assertTrue(answer.endswith(b"body too large (limit 10485760 bytes)\n"), answer)

    def test_head_is_served_for_the_get_routes_and_other_methods_are_told_what_is_allowed(self):
        for path in ("/", "/status", "/healthz"):
            with self.subTest(path=path), connect(self.url) as connection:
                connection.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                head, _, body = read_all(connection).partition(b"\r\n\r\n")
                self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
                self.assertEqual(body, b"")
        for method in ("OPTIONS", "TRACE", "PUT"):
            with self.subTest(method=method), connect(self.url) as connection:
                connection.sendall(f"{method} / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
                head = read_all(connection).partition(b"\r\n\r\n")[0].decode()
                self.assertIn("405", head.split("\r\n")[0])
                self.assertIn("\r\nAllow: GET, HEAD, POST", head)

    def test_headers_built_to_be_slow_to_parse_are_refused_for_little_cpu(self):
        # The email package's parameter parser is quadratic: 60,000 `;` once took seconds of CPU.
        slow = 'a="' + ";" * 60000
        disposition = f'form-data; name="inputFile"; filename="a.jpg"; {slow[:15000]}'
        body = f"--B\r\nContent-Disposition: {disposition}\r\n\r\nx\r\n--B--\r\n".encode()
        requests = [
            upload_head(1).replace(b"boundary=BOUNDARY", f"boundary=x; {slow}".encode()) + b"x",
            upload_head(len(body)).replace(b"boundary=BOUNDARY", b"boundary=B") + body,
        ]
        before = cpu_seconds(self.web.pid)
        for data in requests * 4:
            status, text = raw_request(self.url, data)
            self.assertEqual(status, 400, text)
            self.assertIn("header too long", text)
        self.assertLess(cpu_seconds(self.web.pid) - before, 1.0, "CPU seconds for 8 such requests")

    def test_clients_that_go_away_early_are_one_log_line_each(self):
        seen = self.web.count
        data = upload_head(len(GOOD) + 1000) + GOOD[:2000]
        for _ in range(20):
            with connect(self.url) as connection:
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                connection.sendall(data)
        wait_until(
            lambda: sum("event=client_gone" in line for line in self.web.since(seen)[1]) == 20,
            10,
            what="a client_gone line for each",
        )


def cpu_seconds(pid):
    """User + system CPU seconds process `pid` has used (/proc/PID/stat)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class LastResortTest(unittest.TestCase):
    def test_an_unexpected_failure_is_a_500_in_one_line_and_one_log_line(self):
        class Broken:
            config = settings.load_config({})
            metrics = SimpleNamespace(record=lambda *args: None)

            def read_upload(self, path, headers, rfile):
                raise KeyError("a bug")

        server = SimpleNamespace(tier=Broken(), pages={})
        ours, theirs = socket.socketpair()
        self.addCleanup(theirs.close)
        theirs.sendall(upload_head(10) + b"0123456789")
        with self.assertLogs("web", "ERROR") as logged:
            web.Handler(ours, ("127.0.0.1", 1), server)
        ours.close()
        head, _, body = read_all(theirs).partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 500 "), head)
        self.assertEqual(body, b"internal error\n")
        (line,) = logged.output
        self.assertIn("event=handler_failed", line)
        self.assertIn("KeyError", line)
        self.assertNotIn("\n", line)


if __name__ == "__main__":
    unittest.main()
