"""Requests that are not uploads, or bad ones, each with the status and the words of its one-line
answer: run in-process over a socket pair (tests/unit/test_framing.py) and through the whole
service (tests/stack/test_reliability.py BadInputTest)."""

from tests.support import IMAGES, image_bytes, multipart

GOOD = (IMAGES / "test_00.jpg").read_bytes()
MAX_BODY = 1024 * 1024
# The cases whose answer comes from the app tier (the image itself), not from the web tier's reading.
FROM_THE_APP_TIER = {"not an image", "no face", "huge dimensions"}


def post(body, content_type, extra=b""):
    """Raw bytes of a POST / with a correct Content-Length (unless `extra` headers say otherwise)."""
    head = (f"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n").encode()
    return head + extra + b"\r\n" + body


def form(filename, data, field="inputFile", extra=b""):
    content_type, body = multipart([(field, filename, data)], boundary="BOUNDARY")
    return post(body, content_type, extra)


def part(disposition, data):
    """A multipart body (boundary BOUNDARY) of one part with this Content-Disposition."""
    return f"--BOUNDARY\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n--BOUNDARY--\r\n"


def bad_requests():
    """[(name, raw request bytes, status, words of the answer)]."""
    missing_end = multipart([("inputFile", "a.jpg", GOOD)], boundary="BOUNDARY")[1].replace(b"--BOUNDARY--\r\n", b"")
    return [
        ("PUT", b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405, "not allowed"),
        ("DELETE", b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n", 405, "not allowed"),
        ("PATCH", b"PATCH / HTTP/1.1\r\nHost: x\r\n\r\n", 405, "not allowed"),
        ("other path", form("a.jpg", GOOD).replace(b"POST / ", b"POST /upload "), 404, "not found"),
        (
            "no length",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=B\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            411,
            "Content-Length required",
        ),
        (
            "bad length",
            post(b"x", "multipart/form-data; boundary=B").replace(b"Length: 1", b"Length: -1"),
            400,
            "bad Content-Length",
        ),
        (
            "too big",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\n"
            b"Content-Length: 100000000\r\n\r\n" + b"x" * 50000,
            413,
            "body too large",
        ),
        ("not multipart", post(b"{}", "application/json"), 415, "multipart/form-data"),
        ("no content type", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 415, "multipart"),
        ("no boundary", post(b"x", "multipart/form-data"), 400, "boundary"),
        ("truncated", post(form("a.jpg", GOOD)[-300:-100], "multipart/form-data; boundary=BOUNDARY"), 400, "truncated"),
        ("no closing boundary", post(missing_end, "multipart/form-data; boundary=BOUNDARY"), 400, "closing"),
        ("no inputFile field", form("a.jpg", GOOD, field="file"), 400, "no file field named inputFile"),
        ("inputFile not a file", post(*reversed(multipart([("inputFile", None, b"x")], "BOUNDARY"))), 400, "no file field"),
        ("empty file", form("a.jpg", b""), 400, "empty"),
        ("not an image", form("a.jpg", b"%PDF-1.4 not an image"), 422, "not a readable image"),
        ("no face", form("blank.jpg", image_bytes((64, 64))), 422, "no face found"),
        ("huge dimensions", form("bomb.png", image_bytes((6000, 6000), "black", "PNG")), 422, "image too large"),
        ("long request line", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414, ""),
        ("header flood", b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(150)) + b"\r\n", 431, ""),
        ("long header", b"GET / HTTP/1.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n", 431, ""),
        ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, ""),
        # Header bytes are read as Latin-1, where 0xb2 is "²": a digit to str.isdigit, not to int().
        (
            "non-ASCII digit length",
            post(b"x", "multipart/form-data; boundary=B").replace(b"Length: 1", b"Length: \xb2"),
            400,
            "bad Content-Length",
        ),
        (
            "length and chunked",
            form("a.jpg", GOOD, extra=b"Transfer-Encoding: chunked\r\n"),
            400,
            "both Content-Length and Transfer-Encoding",
        ),
        ("two lengths", form("a.jpg", GOOD, extra=b"Content-Length: 5\r\n"), 400, "conflicting Content-Length"),
        (
            "slow Content-Type",
            post(b"x", 'multipart/form-data; boundary=x; a="' + ";" * 60000),
            400,
            "Content-Type header too long",
        ),
        (
            "slow Content-Disposition",
            post(part('form-data; name="inputFile"; filename="' + ";" * 15000, GOOD), "multipart/form-data; boundary=BOUNDARY"),
            400,
            "Content-Disposition header too long",
        ),
        (
            "part headers too large",
            post(
                part('form-data; name="inputFile"; filename="a.jpg"\r\nX: ' + "a" * 20000, GOOD),
                "multipart/form-data; boundary=BOUNDARY",
            ),
            400,
            "part headers too large",
        ),
        ("OPTIONS", b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 405, "not allowed"),
        ("TRACE", b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", 405, "not allowed"),
        ("CONNECT", b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n", 405, "not allowed"),
        # Python's int() refuses text of over 4300 digits.
        (
            "4301-digit length",
            post(b"x", "multipart/form-data; boundary=B").replace(b"Length: 1", b"Length: " + b"9" * 4301),
            413,
            "body too large",
        ),
        (
            "zero-padded length",
            form("a.jpg", GOOD).replace(b"Content-Length: ", b"Content-Length: " + b"0" * 5000),
            200,
            "a:Paul",
        ),
        ("idna boundary charset", post(b"x", "multipart/form-data; boundary*=idna''%00"), 400, "charset"),
        (
            "undefined file name charset",
            post(part("form-data; name=inputFile; filename*=undefined''a.jpg", GOOD), "multipart/form-data; boundary=BOUNDARY"),
            400,
            "charset",
        ),
        (
            "punycode name charset",
            post(part("form-data; name*=punycode''%FF; filename=a.jpg", GOOD), "multipart/form-data; boundary=BOUNDARY"),
            400,
            "charset",
        ),
        ("unknown method", b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method not allowed"),
        ("PROPFIND", b"PROPFIND / HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method not allowed"),
        ("lower-case get", b"get / HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method not allowed"),
        ("an empty line first", b"\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200, "ok"),
        (
            "space before a colon hides a Transfer-Encoding",
            form("a.jpg", GOOD, extra=b"X-Foo : bar\r\nTransfer-Encoding: chunked\r\n"),
            400,
            "malformed header line",
        ),
        ("a header line without a colon", form("a.jpg", GOOD, extra=b"X-Foo\r\n"), 400, "malformed header line"),
        ("a bare CR splits a header", form("a.jpg", GOOD, extra=b"X-Foo: a\rTransfer-Encoding: chunked\r\n"), 400, "bare CR"),
        ("a NUL in a header", form("a.jpg", GOOD, extra=b"X-Foo: a\x00b\r\n"), 400, "NUL"),
        ("a folded header line", form("a.jpg", GOOD, extra=b"X-Foo: a\r\n b\r\n"), 400, "obs-fold"),
        ("100 header lines", b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(100)) + b"\r\n", 431, ""),
        (
            "99 header lines",
            b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(99)) + b"\r\n",
            200,
            "ok",
        ),
        ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, ""),
    ]
