"""Web tier: accepts image uploads over HTTP and answers each with the name of the face in it.

`POST /` with a multipart field `inputFile` stores the image in the S3 input bucket under a key of
our own making (`<request id>/<safe file name>`), sends a small JSON request to the SQS request
queue and waits for the answer; the body of the reply is `stem:name` as text/plain (every face as
JSON with `?format=json` or `Accept: application/json`: docs/api.md). This module is
the HTTP side: routes, limits, statuses. What is done with an upload is webtier/uploads.py (and, with
FR_RESULTS_TABLE=1, the results table it asks first, webtier/results.py); how the answer finds the
waiting request (by request id, never by file name), and how a request the workers failed on
repeatedly ends in a 502, not a hang, is webtier/replies.py; the upload's parsing is webtier/formdata.py; the
guards on how http.server reads a request are webtier/httpguards.py; what /status and /metrics show is
webtier/status.py; the people the gallery knows (`GET /people`, and with the admin key `POST` and
`DELETE /people/{name}`, checked here: `authorize`) are webtier/people.py's; the pages are files in
webtier/pages/.

`GET /` is a page to upload images from a browser (it POSTs to / as curl does); `GET /status` shows
queue depths, app instances, this tier's counters and the autoscaler's last decision (`?format=json`
for machines); `GET /metrics` has the same in Prometheus text format; `GET /healthz` is 200 when
the queues answer.

Reads: FR_* configuration (core/settings.py), the response and dead-letter queues, queue depths and the
pool (for /status), FR_STATE_DIR/autoscaler.json, the gallery bucket, the admin key (FR_ADMIN_TOKEN, or
the SSM parameter FR_ADMIN_TOKEN_PARAMETER names); with FR_RESULTS_TABLE=1 the results table and the
weights file (the model's fingerprint). Writes: the input bucket, the request queue, the gallery bucket
(a change to the people), the results table (with FR_RESULTS_TABLE=1), FR_STATE_DIR/web.json (how
many requests wait: the autoscaler's exact count of the work). Stops on SIGTERM/SIGINT: stops accepting, lets requests in
progress finish, exits 0; a second signal exits at once.
"""

import contextlib
import errno
import hmac
import json
import math
import socket
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import common
from core import cloud, settings
from core.gallery import MAX_EXAMPLES
from webtier import orphans
from webtier.connection import LINGER_BYTES, READ_CHUNK, Connection
from webtier.formdata import Discarded, MultipartParser, boundary_of, spooled
from webtier.people import People
from webtier.refusals import Refusal
from webtier.replies import Replies
from webtier.results import ResultsTable
from webtier.status import Metrics, Status, prometheus_text
from webtier.uploads import Uploads

log = common.EventLog("web")

# The service promises 100 concurrent clients (the course grader's burst) with room to spare.
LISTEN_BACKLOG = 256
AWS_CONNECTIONS = 100


UPLOAD_FIELD = "inputFile"
# The methods this tier serves (HEAD for the GET routes); any other method gets 405 with them.
ALLOW = "GET, HEAD, POST, DELETE"
PEOPLE = "/people/"
# /healthz asks SQS at most this often.
HEALTH_SECONDS = 1.0
# How an upload is answered: `stem:name` as text (the course's), or every face as JSON.
ANSWER_FORMATS = ("text", "json")


def answers_json(path, headers):
    """Whether an upload asks for its answer in JSON: `?format=json`, or (without ?format) an Accept
    header that names application/json (its q-values are not weighed: naming it is asking)."""
    chosen = parse_qs(urlsplit(path).query).get("format")
    if chosen:
        return chosen[-1] == "json"
    accepted = ",".join(headers.get_all("Accept", [])) if headers else ""
    return any(item.split(";")[0].strip().lower() == "application/json" for item in accepted.split(","))


class HttpError(Refusal):
    """An upload this tier refuses before it reaches the service (request framing)."""

    unread_input = True


class Unauthorized(HttpError):
    status = 401
    # RFC 9110 11.6.1: a 401 says how to authenticate.
    headers = {"WWW-Authenticate": 'Bearer realm="gallery"'}


def person_of(path):
    """The person a /people/{name} path names (percent-decoded, UTF-8: bytes that are not UTF-8 become
    U+FFFD, which no name may hold), or None for another path."""
    if not path.startswith(PEOPLE) or "/" in path[len(PEOPLE) :]:
        return None
    return unquote(path[len(PEOPLE) :], errors="replace") if path[len(PEOPLE) :] else None


def is_upload(part):
    """Whether a multipart part is an uploaded file in the `inputFile` field."""
    return part.name == UPLOAD_FIELD and part.filename is not None


class WebTier:
    """What the HTTP handler serves: the uploads (webtier/uploads.py), the replies' pollers, the metrics
    and status, and the checks of an upload's request (HttpError, MultipartError)."""

    def __init__(self, config, s3, sqs, ec2, admin_token=""):
        self.config = config
        self.sqs = sqs
        self.admin_token = admin_token
        self.metrics = Metrics()
        self.request_url, self.reply_url = cloud.queue_urls(sqs, config)
        self.health_lock, self.health_checked = threading.Lock(), -HEALTH_SECONDS
        self.dead_letter_url = sqs.get_queue_url(QueueName=config.dead_letter_queue)["QueueUrl"]
        self.replies = Replies(config, sqs, self.reply_url, self.dead_letter_url)
        table = results_table(config, lambda: self.people.identity())
        self.uploads = Uploads(
            config, s3, sqs, self.request_url, self.reply_url, self.replies, table, lambda: self.people.version()
        )
        self.people = People(config, s3, self.uploads)
        queues = {"request": self.request_url, "response": self.reply_url, "dead_letter": self.dead_letter_url}
        self.status = Status(
            config,
            sqs,
            ec2,
            queues,
            lambda: dict(self.metrics.snapshot(), in_flight=len(self.replies), table_hits=table.hits if table else None),
        )

    def check_upload(self, path, headers):
        """(body length, multipart boundary) of an upload, from its request line and headers: what
        can be refused before the body is read (HttpError,
        MultipartError), here and for `Expect: 100-continue`.

        Framing a proxy in front could read differently from us is refused (RFC 9112 6.3): a
        Content-Length beside a Transfer-Encoding, or two different Content-Lengths."""
        url = urlsplit(path)
        if person_of(url.path) is not None:
            self.authorize(headers)
        elif url.path != "/":
            raise HttpError("not found: POST images to /, or examples to /people/{name}", 404)
        else:
            query = parse_qs(url.query, keep_blank_values=True)
            if set(query) - {"format"} or query.get("format", ["text"])[-1] not in ANSWER_FORMATS:
                raise HttpError("POST / takes no query but ?format=json or ?format=text")
        lengths = {value.strip() for value in headers.get_all("Content-Length", [])}
        if lengths and "Transfer-Encoding" in headers:
            raise HttpError("both Content-Length and Transfer-Encoding: send one")
        if not lengths:
            raise HttpError("Content-Length required", 411)
        if len(lengths) > 1:
            raise HttpError("conflicting Content-Length headers")
        (length,) = lengths
        if not (length.isascii() and length.isdigit()):
            raise HttpError("bad Content-Length")
        # Past 4300 digits int() refuses the text (Python's guard against quadratic conversion).
        digits = length.lstrip("0") or "0"
        size = int(digits) if len(digits) <= len(str(self.config.max_body)) else math.inf
        if size > self.config.max_body:
            raise HttpError(f"body too large (limit {self.config.max_body} bytes)", 413)
        return size, boundary_of(headers.get("Content-Type"))

    def authorize(self, headers):
        """A change to the gallery: its key must be the admin key (HttpError 403 when changes are off,
        401 when the key is missing or wrong). Compared in constant time; the key is never logged."""
        if not self.admin_token:
            raise HttpError("changes to the gallery are off: the web tier has no FR_ADMIN_TOKEN", 403)
        scheme, _, key = (headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), self.admin_token.encode()):
            raise Unauthorized("a change to the gallery needs its key: Authorization: Bearer <key>")

    def read_upload(self, path, headers, rfile, most=1):
        """The `inputFile` parts of a POST body, checked for size and form: the first, or (`most` > 1)
        up to `most` of them, more being a 413."""
        remaining, boundary = self.check_upload(path, headers)
        kept, extra = [], []
        parser = MultipartParser(boundary, new_body=self.upload_body(kept, extra, most))
        try:
            while remaining:
                chunk = rfile.read(min(READ_CHUNK, remaining))
                if not chunk:
                    raise HttpError("body shorter than Content-Length")
                parser.feed(chunk)
                remaining -= len(chunk)
            parser.close()
            if most > 1 and extra:
                raise HttpError(f"too many {UPLOAD_FIELD} files: at most {most}", 413)
            if not kept:
                raise HttpError(f"no file field named {UPLOAD_FIELD}")
            if not all(part.size for part in kept):
                raise HttpError("the uploaded file is empty")
            return kept
        except BaseException:
            for part in kept:  # its spooled file (on disk past SPOOL_BYTES) goes now, not at GC
                part.body.close()
            raise

    @staticmethod
    def upload_body(kept, extra, most):
        """new_body for the parser: the first `most` `inputFile` file parts are kept (spooled, and
        added to `kept`), every other part only counted (an `inputFile` one in `extra`), so that a
        body of many parts costs no more memory than `most`."""

        def new_body(part):
            if not is_upload(part):
                return Discarded()
            if len(kept) >= most:
                extra.append(part)
                return Discarded()
            kept.append(part)
            return spooled()

        return new_body

    def healthy(self):
        """True when both queues answered within the last HEALTH_SECONDS (asked again, one caller
        at a time, when not): a load balancer's checks, or a flood of them, cost SQS little."""
        with self.health_lock:
            if time.monotonic() - self.health_checked >= HEALTH_SECONDS:
                for url in (self.request_url, self.reply_url):
                    self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
                self.health_checked = time.monotonic()
        return True


class Handler(Connection):
    """The tier's routes: uploads (POST /), the pages, /status, /metrics, /healthz."""

    def handle_expect_100(self):
        """Refuse an upload before its body is sent (curl waits for this), or ask for the body."""
        if self.command == "POST":
            try:
                self.tier.check_upload(self.path, self.headers)
            except Refusal as e:
                self.tier.metrics.record(self.refuse(e), 0)
                return False
        return super().handle_expect_100()

    def do_POST(self):
        started = time.monotonic()
        status = self.upload()
        self.tier.metrics.record(status, time.monotonic() - started)

    def wants_json(self):
        # Asked also of a request that never came whole (a 408 before its request line): no path yet.
        path = urlsplit(getattr(self, "path", "") or "").path
        if path == "/people" or person_of(path) is not None:
            return True
        return self.command == "POST" and answers_json(self.path, getattr(self, "headers", None))

    def do_DELETE(self):
        """Remove a person (with the admin key)."""
        from botocore.exceptions import BotoCoreError, ClientError

        person = person_of(urlsplit(self.path).path)
        if person is None:
            return self.refuse_method()
        try:
            self.tier.authorize(self.headers)
            self.send_json(200, self.tier.people.remove(person))
        except Refusal as e:
            self.refuse(e)
        except (BotoCoreError, ClientError) as e:
            log.warning("aws_error", error=e)
            self.refuse(Refusal("storage unavailable, try again", 503))

    def upload(self):
        """Answer one upload (of an image, or of a person's examples); its HTTP status."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            person = person_of(urlsplit(self.path).path)
            if person is not None:
                parts = self.tier.read_upload(self.path, self.headers, self.rfile, MAX_EXAMPLES)
                with contextlib.ExitStack() as bodies:
                    for part in parts:
                        bodies.enter_context(part.body)
                    return self.send_json(201, self.tier.people.add(person, parts))
            (part,) = self.tier.read_upload(self.path, self.headers, self.rfile)
            faces = self.wants_json()
            with part.body:
                answer = self.tier.uploads.recognize(part.filename, part.body, faces)
            extra = {"X-Model-Ms": answer.model_ms} if answer.model_ms else None
            return self.send_json(200, answer.json(), extra) if faces else self.send_text(200, answer.text(), extra)
        except Refusal as e:
            status = self.refuse(e)
            if e.unread_input:
                self.linger()
            return status
        except (BotoCoreError, ClientError) as e:
            log.warning("aws_error", error=e)
            return self.refuse(Refusal("storage or queue unavailable, try again", 503))
        except TimeoutError:
            log.info("client_timeout", client=self.client_address[0])
            self.answer_if_unanswered(408, "request not received in time")
            return 408
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            # The upload's spool (a temporary file past SPOOL_BYTES) found the disk full.
            log.warning("disk_full", error=e)
            self.answer_if_unanswered(503, "no room to receive the upload, try again")
            return 503

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/status" and parse_qs(url.query).get("format") == ["json"]:
            status = dict(self.tier.status.read(), chart=self.tier.status.chart())
            self.send_body(200, json.dumps(status, indent=1).encode(), "application/json")
        elif url.path in self.server.pages:
            self.send_body(200, *self.server.pages[url.path])
        elif url.path == "/metrics":
            self.send_body(200, prometheus_text(self.tier.status.read()).encode(), "text/plain; version=0.0.4")
        elif url.path == "/people":
            try:
                self.send_json(200, self.tier.people.listing())
            except Refusal as e:
                self.refuse(e)
        elif url.path == "/healthz":
            try:
                self.tier.healthy()
                self.send_text(200, "ok")
            except Exception as e:
                self.send_text(503, f"queues unreachable: {type(e).__name__}")
        else:
            self.send_text(404, "not found")

    # The GET routes' headers, without their bodies (send_body leaves them out).
    do_HEAD = do_GET

    def refuse_method(self):
        # The method is not echoed: it is the client's bytes (up to 64 KiB of them).
        self.send_text(405, "method not allowed: GET / for the page, POST / to upload", extra={"Allow": ALLOW})

    do_PUT = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = refuse_method


# The pages, read from webtier/pages/ once at start: URL path -> (file, content type). No external assets;
# answers are put in with textContent, never as HTML.
PAGES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/status": ("status.html", "text/html; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
PAGES_DIR = settings.PROJECT_DIR / "webtier" / "pages"


def load_pages():
    """{URL path: (bytes, content type)} of PAGES; a missing file stops the process (exit 78)."""
    for name, _ in PAGES.values():
        settings.require_file(PAGES_DIR / name, "the pages ship with the code")
    return {path: ((PAGES_DIR / name).read_bytes(), kind) for path, (name, kind) in PAGES.items()}


class Server(ThreadingHTTPServer):
    """A thread per connection, at most FR_MAX_CONNECTIONS of them: past that a connection gets a
    503 at once, from the accepting thread, and is closed."""

    request_queue_size = LISTEN_BACKLOG
    # Requests in progress finish on shutdown (server_close joins their threads).
    daemon_threads = False

    def __init__(self, address, handler, tier, pages):
        super().__init__(address, handler)
        self.tier = tier
        self.pages = pages
        self.connections = threading.BoundedSemaphore(tier.config.max_connections)

    def process_request(self, request, client_address):
        if not self.connections.acquire(blocking=False):
            self.refuse(request, client_address)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.connections.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release()

    def refuse(self, request, client_address):
        """A 503 without a thread: written only if the socket takes it at once, then closed."""
        limit = self.tier.config.max_connections
        text = f"too many connections (limit {limit}), try again\n".encode()
        head = (
            f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(text)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
        ).encode()
        log.warning("connection_refused", client=client_address[0], limit=limit)
        try:
            request.setblocking(False)
            request.send(head + text)
            request.shutdown(socket.SHUT_WR)
            # Unread input makes close() reset the connection, and the client might then miss the 503.
            request.recv(LINGER_BYTES)
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request, client_address):
        """Whatever escapes a handler (Handler.handle_one_request catches what it can): one line."""
        log.warning("connection_error", client=client_address[0], error=repr(sys.exc_info()[1]))


def results_table(config, gallery):
    """The results table (webtier/results.py) with FR_RESULTS_TABLE=1, else None. It needs the weights
    file and the gallery's identity (`gallery()`): their fingerprint says which answers still hold."""
    if not config.results_table:
        return None
    hint = "FR_RESULTS_TABLE=1 needs the app tier's weights: their fingerprint says which answers still hold"
    settings.require_file(config.weights, f"set FR_WEIGHTS; {hint}")
    table = ResultsTable.from_config(config, AWS_CONNECTIONS, gallery)
    log.info("results_table", table=table.name)
    return table


def admin_token(config, ssm):
    """The gallery's admin key: FR_ADMIN_TOKEN, or the SSM parameter FR_ADMIN_TOKEN_PARAMETER names
    (a SecureString, decrypted), or "" (changes off). Never logged."""
    if config.admin_token or not config.admin_token_parameter:
        return config.admin_token
    return ssm().get_parameter(Name=config.admin_token_parameter, WithDecryption=True)["Parameter"]["Value"]


def main():
    started = time.time()  # requests sent before this are a predecessor's (webtier/orphans.py)
    config = settings.load_config_or_exit()
    common.setup_logging(config.log_level)
    stop = threading.Event()
    common.stop_on_signals(stop)
    tier = WebTier(
        config,
        cloud.client(config, "s3", AWS_CONNECTIONS),
        cloud.client(config, "sqs", AWS_CONNECTIONS),
        cloud.client(config, "ec2"),
        admin_token(config, lambda: cloud.client(config, "ssm")),
    )
    log.info("gallery_changes", allowed=bool(tier.admin_token))
    pages = load_pages()
    server = Server((config.host, config.port), Handler, tier, pages)
    # Requests still in progress at shutdown need the pollers: they stop after those are done.
    pollers_stop = threading.Event()
    pollers = tier.replies.threads(pollers_stop)
    pollers.append(threading.Thread(target=tier.status.sample, args=(pollers_stop,), name="chart", daemon=True))
    sweep = (tier.sqs, tier.request_url, started, pollers_stop)
    pollers.append(threading.Thread(target=orphans.sweep, args=sweep, name="orphans", daemon=True))
    for poller in pollers:
        poller.start()
    serving = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    serving.start()
    host, port = server.server_address[:2]
    log.info("listening", host=host, port=port)
    stop.wait()
    log.info("stopping", pending=len(tier.replies))
    server.shutdown()
    server.server_close()
    # A poller in a long poll returns within FR_POLL_WAIT; nothing waits for its answers any more.
    pollers_stop.set()
    log.info("stopped")


if __name__ == "__main__":
    main()
