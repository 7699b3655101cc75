"""The web tier's HTTP connection: http.server's handler with the guards every route relies on
(web.py's Handler adds the routes)."""

import io
import json
import socket
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler

import common
from webtier.httpguards import BadHeaderLine, DeadlineReader, HeaderLines, RequestHeaders
from webtier.refusals import Refusal

log = common.EventLog("web")

# Refusing a body we did not read: drain at most this much, for at most this long, before closing.
READ_CHUNK = 64 * 1024
LINGER_SECONDS = 1
LINGER_BYTES = 1024 * 1024
# The one-line reasons of http.server's own errors (it would quote the request line in them).
OWN_ERRORS = {
    400: "bad request line",
    414: "request line too long",
    431: "request header fields too large",
    505: "HTTP version not supported: send HTTP/1.0 or HTTP/1.1",
}
# Empty lines skipped before a request line (RFC 9112 2.2: a server SHOULD ignore at least one).
MAX_EMPTY_LINES = 4


class Connection(BaseHTTPRequestHandler):
    """http.server's request handling, guarded: every request answered in one line (a 408 when it
    did not arrive in time, a last-resort 500), header lines checked as they are read, a refusal of an
    unread body answered before the connection closes, one request per connection. The routes are
    the subclass's (web.Handler); `self.server.tier` is the tier (its config)."""

    server_version = "face-rec"
    MessageClass = RequestHeaders
    # HTTP/1.1 so that `Expect: 100-continue` is answered; every response still closes its
    # connection, so a connection is one request and its thread is free after it.
    protocol_version = "HTTP/1.1"
    # An unparseable request is answered with a status line (http.server's default is HTTP/0.9: none).
    default_request_version = "HTTP/1.0"

    @property
    def tier(self):
        return self.server.tier

    def setup(self):
        super().setup()
        config = self.tier.config
        self.responded = False
        # What parse_request sets, for a 408 to a client that never sent a whole request line.
        self.command, self.requestline, self.request_version = None, "", self.default_request_version
        self.rfile = io.BufferedReader(DeadlineReader(self.connection, config.receive_deadline, config.client_timeout))

    def handle_one_request(self):
        """http.server's, with every request answered: 408 when it did not arrive in time, one line
        of log (not a traceback) for a client that went away, and a last-resort 500."""
        try:
            super().handle_one_request()
        except ConnectionError as e:
            log.info("client_gone", client=self.client_address[0], error=type(e).__name__)
        except Exception as e:
            where = traceback.extract_tb(e.__traceback__)[-1]
            log.error(
                "handler_failed",
                client=self.client_address[0],
                error=repr(e),
                at=f"{where.filename.rsplit('/', 1)[-1]}:{where.lineno}",
            )
            self.answer_if_unanswered(500, "internal error")
        if self.rfile.raw.timed_out:
            self.answer_if_unanswered(408, "request not received in time")
        self.close_connection = True

    def parse_request(self):
        """http.server's, stricter: empty lines before the request line are skipped, header lines
        are checked as they are read (HeaderLines), and a method this tier does not serve gets a
        405 (http.server's 501 echoed the method back)."""
        for _ in range(MAX_EMPTY_LINES):
            if self.raw_requestline not in (b"\r\n", b"\n"):
                break
            self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.send_error(414)
            return False
        reading, self.rfile = self.rfile, HeaderLines(self.rfile)
        try:
            parsed = super().parse_request()
        except BadHeaderLine as e:
            self.refuse(e)
            return False
        finally:
            self.rfile = reading
        if parsed and not hasattr(self, f"do_{self.command}"):
            self.refuse_method()
            return False
        return parsed

    def answer_if_unanswered(self, status, text):
        if self.responded:
            return
        try:
            self.refuse(Refusal(text, status))
        except OSError:
            pass

    def wants_json(self):
        """Whether this request's errors are answered in JSON (the routes say; here: never)."""
        return False

    def send_text(self, status, text, extra=None):
        """A one-line text/plain response (`extra`: more headers); returns `status`."""
        return self.send_body(status, f"{text}\n".encode(), "text/plain; charset=utf-8", extra)

    def send_body(self, status, body, content_type, extra=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        # One request per connection (see protocol_version); after a refusal the rest of the body
        # may be unread anyway.
        self.send_header("Connection", "close")
        self.close_connection = True
        # The reading side may have left a nearly spent timeout: a client gets this long to take the answer.
        self.connection.settimeout(self.tier.config.client_timeout)
        self.end_headers()
        self.responded = True
        if self.command != "HEAD":
            self.wfile.write(body)
        return status

    def send_json(self, status, value, extra=None):
        """A JSON response of one line; returns `status`."""
        return self.send_body(status, f"{json.dumps(value)}\n".encode(), "application/json", extra)

    def refuse(self, refusal):
        """The one place a Refusal becomes a response: its status and its reason, one line (of text,
        or `{"error": reason}` where the request asked for JSON)."""
        if self.wants_json():
            return self.send_json(refusal.status, {"error": refusal.reason}, refusal.headers)
        return self.send_text(refusal.status, refusal.reason, refusal.headers)

    def linger(self):
        """After refusing a body we did not read: let the client read our answer before we close.

        Closing with unread input makes the kernel reset the connection, and a client still
        sending would then see the reset instead of the status. Drain a bounded amount first, for
        at most LINGER_SECONDS in all and never past the connection's receive deadline: a client
        dribbling a byte at a time holds its thread no longer on this path than on any other."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            until = min(time.monotonic() + LINGER_SECONDS, self.rfile.raw.due)
            drained = 0
            while drained < LINGER_BYTES and (left := until - time.monotonic()) > 0:
                self.connection.settimeout(left)
                if not (chunk := self.connection.recv(READ_CHUNK)):
                    break
                drained += len(chunk)
        except OSError:
            pass

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (400 on a bad request line, 414, 431, 505) as one line of text of
        ours: its messages quote the request line, which are the client's bytes (up to 64 KiB)."""
        self.send_text(code, OWN_ERRORS.get(code, HTTPStatus(code).phrase.lower()))

    def version_string(self):
        """The Server header: the service's name, no versions (http.server adds Python's)."""
        return self.server_version

    def log_message(self, format, *args):
        log.debug("http", client=self.client_address[0], detail=format % args)
