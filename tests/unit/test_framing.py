"""How the web tier reads a request, in-process: web.Handler over a socket pair, the app tier stood in
for by an answer (`stem:Paul`), so that only the web tier's own reading decides. The same table runs
through the whole service in tests/stack/test_reliability.py (BadInputTest), with the cases whose
answer comes from the app tier."""

import gc
import socket
import threading
import unittest
import warnings
from types import SimpleNamespace

import web
from core import settings
from tests.framing import FROM_THE_APP_TIER, MAX_BODY, bad_requests
from webtier.status import Metrics
from webtier.uploads import Answer, upload_key


class AnsweringTier(web.WebTier):
    """The web tier's checks and parsing, with an answer in place of S3, SQS and the app tier."""

    def __init__(self, config):
        self.config = config
        self.metrics = Metrics()
        self.uploads = SimpleNamespace(recognize=lambda filename, body, faces: Answer(upload_key("id", filename)[0], "Paul"))

    def healthy(self):
        return True


def exchange(tier, data):
    """(status, body) of the web tier's answer to the raw request `data`."""
    head, body = exchange_whole(tier, data)
    return int(head.split(b" ", 2)[1]), body.decode()


def exchange_whole(tier, data):
    """(status line and headers, body) of the web tier's answer to the raw request `data`."""
    ours, theirs = socket.socketpair()
    # The client sends from a thread of its own, as a client does: the handler may answer before
    # reading all of it (and then drains what is left, for a moment).
    sender = threading.Thread(target=send_then_close_writing, args=(theirs, data), daemon=True)
    sender.start()
    web.Handler(ours, ("127.0.0.1", 1), SimpleNamespace(tier=tier, pages={}))
    ours.close()
    received = b""
    while chunk := theirs.recv(65536):
        received += chunk
    theirs.close()
    sender.join(5)
    head, _, body = received.partition(b"\r\n\r\n")
    return head, body


def send_then_close_writing(connection, data):
    try:
        connection.sendall(data)
        connection.shutdown(socket.SHUT_WR)
    except OSError:  # the handler closed first: it answered without the rest
        pass


class FramingTest(unittest.TestCase):
    def test_each_bad_request_gets_its_status_and_one_line_from_the_web_tier_alone(self):
        tier = AnsweringTier(settings.load_config({"FR_MAX_BODY": str(MAX_BODY), "FR_CLIENT_TIMEOUT": "1"}))
        cases = [case for case in bad_requests() if case[0] not in FROM_THE_APP_TIER]
        self.assertGreater(len(cases), 40)
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always", ResourceWarning)
            for name, data, status, reason in cases:
                with self.subTest(name):
                    got, body = exchange(tier, data)
                    self.assertEqual(got, status, body)
                    self.assertIn(reason, body)
                    self.assertEqual(body.count("\n"), 1, f"one line: {body!r}")
            gc.collect()
        # What a request spooled (a temporary file past SPOOL_BYTES) was closed, not left to the GC.
        self.assertEqual([str(w.message) for w in warned if w.category is ResourceWarning], [])

    def test_an_error_echoes_nothing_the_client_sent_and_the_server_names_no_version(self):
        tier = AnsweringTier(settings.load_config({}))
        requests = [
            b"GET /<script>x</script> HTTP/1.1 extra\r\n\r\n",  # three words and more: bad syntax
            b"GET /<script> HTTP/9<script>\r\n\r\n",  # a bad version
            b"GET /<script> HTTP/3.0\r\n\r\n",  # a version not supported
        ]
        for data in requests:
            with self.subTest(data=data):
                head, body = exchange_whole(tier, data)
                self.assertNotIn(b"script", head + body)
                self.assertEqual(body.count(b"\n"), 1, body)
                server = [line for line in head.split(b"\r\n") if line.lower().startswith(b"server:")]
                self.assertEqual(server, [b"Server: face-rec"])


if __name__ == "__main__":
    unittest.main()
