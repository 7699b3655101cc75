"""multipart/form-data (RFC 7578), as browsers and `curl -F` send uploads: an I/O-free push parser.

The caller reads the bytes (from a socket, a file, a test's list of chunks) and feeds them, and
decides where each part's body goes (`new_body(part)`: by default a file spooled to disk past
1 MiB; the web tier keeps only the part it uses and counts the others' bytes, so memory is bounded
whatever the upload's size or shape); `MultipartParser` returns the parts. Every refusal is an
MultipartError carrying the HTTP status it calls for and a one-line reason for the client (415
not multipart, 400 malformed), as defnull/multipart's errors do. The web tier
(web.py) is its only user; the tests feed it every way a body can be split.
"""

import tempfile
from email.message import Message
from email.utils import collapse_rfc2231_value

from webtier.refusals import Refusal

# Part headers are small (a name, a file name, a type); a larger block is refused.
MAX_PART_HEADER_BYTES = 16 * 1024
# The email package's parameter parser takes time quadratic in a header's length (seconds of CPU
# for a long one: docs/performance.md), so a longer Content-Type or Content-Disposition is refused
# before it is parsed. Real ones are far shorter: a boundary is at most 70 characters, a file name
# 255 bytes (765 characters percent-encoded); at this length the parse takes milliseconds.
MAX_PARAMETERS_CHARS = 2048
MAX_PARTS = 16
# By default, a part body larger than this goes to a temporary file (under TMPDIR), not memory.
SPOOL_BYTES = 1024 * 1024


class MultipartError(Refusal):
    """A body we refuse (400), read only in part."""

    unread_input = True


class NotMultipart(MultipartError):
    """A Content-Type we refuse."""

    status = 415


def spooled(part=None):
    """The default home of a part's body: memory up to SPOOL_BYTES, a temporary file past them."""
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)


class Discarded:
    """A part body nobody reads: its bytes are counted (Part.size) and dropped."""

    def write(self, data):
        pass


class Part:
    """One part of a multipart/form-data body; `body` (a file the caller chose) is at its end."""

    def __init__(self, headers):
        disposition = _header_params(headers.get("content-disposition", ""), "Content-Disposition")
        self.name, self.filename = (_param(disposition, key, "content-disposition") for key in ("name", "filename"))
        self.body = None
        self.size = 0

    def write(self, data):
        self.body.write(data)
        self.size += len(data)


class MultipartParser:
    """An I/O-free push parser for multipart/form-data (RFC 7578): `feed` bytes, then `close`.

    Errors are MultipartError(reason), a 400 (NotMultipart, a 415, for the Content-Type). Part
    headers are limited to `max_header_bytes`; each part's body is written to the file object
    `new_body(part)` returns, once its name is known.
    """

    def __init__(self, boundary, max_header_bytes=MAX_PART_HEADER_BYTES, max_parts=MAX_PARTS, new_body=spooled):
        self.new_body = new_body
        self.delimiter = b"--" + boundary
        self.body_end = b"\r\n" + self.delimiter
        self.max_header_bytes = max_header_bytes
        self.max_parts = max_parts
        self.buffer = bytearray()
        self.state = "preamble"
        self.parts = []

    def feed(self, data):
        self.buffer += data
        while self._step():
            pass

    def close(self):
        """The parts, once the closing boundary has been seen."""
        if self.state != "end":
            raise MultipartError("truncated multipart body: no closing boundary")
        return self.parts

    def _step(self):
        """Advance by one state transition; False when more data is needed."""
        buf = self.buffer
        if self.state == "preamble":
            at = buf.find(self.delimiter)
            if at < 0:
                # Keep only what could be the start of a delimiter.
                del buf[: max(0, len(buf) - len(self.delimiter))]
                return False
            del buf[:at]
            self.state = "boundary"
            return True
        if self.state == "boundary":
            after = len(self.delimiter)
            if len(buf) < after + 2:
                return False
            tail = bytes(buf[after : after + 2])
            if tail == b"--":
                self.state = "end"
                return False
            if tail != b"\r\n":
                raise MultipartError("malformed multipart body: bad boundary line")
            # Keep the CRLF: the header block is then found by its CRLFCRLF even when empty.
            del buf[:after]
            self.state = "headers"
            return True
        if self.state == "headers":
            at = buf.find(b"\r\n\r\n")
            if (len(buf) if at < 0 else at) > self.max_header_bytes:
                raise MultipartError(f"multipart part headers too large (limit {self.max_header_bytes} bytes)")
            if at < 0:
                return False
            if len(self.parts) == self.max_parts:
                raise MultipartError(f"too many multipart parts (limit {self.max_parts})")
            part = Part(_parse_header_block(bytes(buf[2:at])))
            part.body = self.new_body(part)
            self.parts.append(part)
            del buf[: at + 4]
            self.state = "body"
            return True
        if self.state == "body":
            at = buf.find(self.body_end)
            if at < 0:
                keep = len(self.body_end) - 1
                if len(buf) > keep:
                    self.parts[-1].write(bytes(buf[:-keep]))
                    del buf[:-keep]
                return False
            self.parts[-1].write(bytes(buf[:at]))
            del buf[: at + 2]
            self.state = "boundary"
            return True
        # "end": the epilogue is ignored.
        buf.clear()
        return False


def _parse_header_block(block):
    headers = {}
    for line in block.split(b"\r\n") if block else ():
        name, sep, value = line.partition(b":")
        if not sep:
            raise MultipartError("malformed multipart part header")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("utf-8", "replace")
    return headers


def _header_params(value, header):
    """A Message whose get_param parses `value`'s parameters (quoted strings, RFC 2231), or
    MultipartError 400 when `value` is too long to parse."""
    if len(value) > MAX_PARAMETERS_CHARS:
        raise MultipartError(f"{header} header too long (limit {MAX_PARAMETERS_CHARS} characters)")
    message = Message()
    message["content-disposition"] = value
    message["content-type"] = value
    return message


def _param(message, key, header):
    """A parameter's value as text: `key="a.jpg"`, or RFC 2231's `key*=UTF-8''a.jpg` (browsers
    send the latter for non-ASCII file names); None when absent. A charset that cannot decode it
    (`idna`, `punycode`, `undefined` raise UnicodeError) is MultipartError 400."""
    value = message.get_param(key, header=header)
    try:
        return None if value is None else collapse_rfc2231_value(value)
    except (UnicodeError, LookupError):
        raise MultipartError(f"{header} parameter {key}: a charset that cannot decode it") from None


def boundary_of(content_type):
    """The multipart boundary (bytes) of a request Content-Type, or NotMultipart (415) / MultipartError (400)."""
    if not content_type:
        raise NotMultipart("Content-Type must be multipart/form-data")
    params = _header_params(content_type, "Content-Type")
    if params.get_content_type() != "multipart/form-data":
        raise NotMultipart("Content-Type must be multipart/form-data")
    boundary = _param(params, "boundary", "content-type")
    if not boundary or len(boundary) > 70:
        raise MultipartError("multipart/form-data without a valid boundary")
    return boundary.encode("latin-1", "replace")
