"""http.server's request reading, guarded: http.server and the email parser behind it read what
a client sends as leniently as the old web did. Here a connection's reading side has a deadline
(DeadlineReader), each request header line is checked as it is read (HeaderLines), and a multipart
boundary is not looked up in a header too long to parse in time (RequestHeaders). web.py's Handler
puts them in place; a refusal is a 400 with the reason (BadHeaderLine)."""

import io
import re
import time
from http.client import HTTPMessage

from webtier.formdata import MAX_PARAMETERS_CHARS
from webtier.refusals import Refusal

# A header field line: a token, then at once the colon (RFC 9110 5.1, RFC 9112 5.1).
HEADER_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:")


class DeadlineReader(io.RawIOBase):
    """A connection's reading side that ends in TimeoutError once the request has taken longer
    than `deadline` seconds since the connection was accepted, or the client has been silent for
    `idle` seconds: a client sending a byte a second holds its thread no longer than `deadline`."""

    def __init__(self, connection, deadline, idle):
        self.connection = connection
        self.due = time.monotonic() + deadline
        self.idle = idle
        self.timed_out = False

    def readable(self):
        return True

    def readinto(self, buffer):
        left = self.due - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError("request not received by its deadline")
            self.connection.settimeout(min(self.idle, left))
            return self.connection.recv_into(buffer)
        except TimeoutError:
            self.timed_out = True
            raise


class BadHeaderLine(Refusal):
    """A request header line we refuse (400)."""


class HeaderLines:
    """The reading side while http.client reads a request's header lines: each line is checked as
    it is read. The email parser behind http.client is lenient where leniency hides framing: a
    line with whitespace before its colon, or none, silently ends the header block (a
    Transfer-Encoding after it is never seen), and a bare CR splits a line in two. RFC 9112 5.1:
    such a request is refused with 400; so are a NUL and a folded line (obs-fold)."""

    def __init__(self, source):
        self.source = source

    def readline(self, limit=-1):
        line = self.source.readline(limit)
        if line in (b"\r\n", b"\n", b""):
            return line
        content = line[:-2] if line.endswith(b"\r\n") else line[:-1] if line.endswith(b"\n") else line
        if b"\r" in content or b"\0" in content:
            raise BadHeaderLine("a bare CR or a NUL in a header line")
        if content[:1] in (b" ", b"\t"):
            raise BadHeaderLine("a folded header line (obs-fold)")
        if not HEADER_LINE.match(content):
            raise BadHeaderLine("a malformed header line (a name, then at once a colon)")
        return line


class RequestHeaders(HTTPMessage):
    """http.server's request headers. The email parser behind them looks a multipart Content-Type's
    boundary up as it parses, with its parameter parser, whose time is quadratic in the header's
    length (seconds of CPU before any of our code ran: docs/performance.md): past MAX_PARAMETERS_CHARS the
    boundary is not looked up here, and boundary_of refuses the header (400); nor is a boundary in
    a charset that cannot decode it (idna, punycode: UnicodeError)."""

    def get_boundary(self, failobj=None):
        if len(self.get("content-type", "")) > MAX_PARAMETERS_CHARS:
            return failobj
        try:
            return super().get_boundary(failobj)
        except (UnicodeError, LookupError):  # an RFC 2231 charset that cannot decode it: boundary_of says so
            return failobj
