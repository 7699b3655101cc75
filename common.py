"""What the web tier, the worker and the autoscaler share: configuration, AWS clients, the queue
message codec, reading queue depths, and logging set-up.

Configuration comes only from FR_* environment variables, read here once by `load_config`; every
variable is listed in the README. The same code talks to AWS or, with FR_ENDPOINT_URL set, to a moto
server standing in for it (local mode and tests).
"""
import ipaddress
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

EX_CONFIG = 78
PROJECT_DIR = Path(__file__).resolve().parent
# SQS's limit on our request queue (set at provisioning); images travel through S3, never SQS.
MAX_MESSAGE_BYTES = 1024
# Every instance of ours carries this tag (value FR_PREFIX); IAM lets the autoscaler touch only those.
PREFIX_TAG = "fr-prefix"
# The Name tag of the host of the web tier and the autoscaler.
WEB_HOST_NAME = "web-instance"


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class Config:
    prefix: str = "face-rec"
    region: str = "us-east-1"
    endpoint_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    request_timeout: float = 120.0
    max_body: int = 10 * 1024 * 1024
    poll_wait: int = 2
    visibility_timeout: int = 30
    batch: int = 4
    client_timeout: float = 30.0
    receive_deadline: float = 60.0
    max_connections: int = 512
    max_instances: int = 15
    # Members beyond max_instances, kept stopped: a burst that comes while others are still
    # stopping starts these (None: as many as max_instances).
    spare_instances: int | None = None
    # Instances kept running when there is no work (paid for, to answer at once).
    min_instances: int = 0
    # Stop app instances by hibernating them (their worker resumes with the model loaded).
    hibernate: bool = True
    # A member is hibernated only this long after its launch and after its last start; sooner,
    # the guest would drop the request (pool.hibernation_unready says why).
    hibernate_after_launch: float = 120.0
    hibernate_after_start: float = 60.0
    scale_interval: float = 0.5
    scale_in_grace: float = 0.5
    ami_id: str = ""
    instance_type: str = "t3.small"
    weights: Path = PROJECT_DIR / "var/stand-in/weights.pt"
    gallery: Path = PROJECT_DIR / "var/stand-in/gallery.pt"
    torch_threads: int = 0
    log_level: str = "INFO"
    moto_port: int = 5000
    web_cidr: str = ""
    state_dir: Path = PROJECT_DIR / "var/state"
    cache_size: int = 0
    web_instance_type: str = "t3.micro"
    # Local mode and tests: "aws" makes the moto server behave like AWS where it matters
    # (tools/awslike.py), with every simulated delay multiplied by simulate_time_scale.
    simulate: str = ""
    simulate_time_scale: float = 1.0
    # How far behind the truth SQS's approximate counts may be (GetQueueAttributes reference: up
    # to a minute after producers stop); the autoscaler trusts them only past this.
    sqs_count_lag: float = 60.0

    @property
    def in_bucket(self):
        return f"{self.prefix}-in-bucket"

    @property
    def out_bucket(self):
        return f"{self.prefix}-out-bucket"

    @property
    def request_queue(self):
        return f"{self.prefix}-req-queue"

    @property
    def response_queue(self):
        return f"{self.prefix}-resp-queue"

    @property
    def dead_letter_queue(self):
        return f"{self.prefix}-req-dlq"

    @property
    def deploy_bucket(self):
        return f"{self.prefix}-deploy-bucket"

    @property
    def pool_size(self):
        """Members of the app-tier pool: at most max_instances of them run at once."""
        return self.max_instances + (self.max_instances if self.spare_instances is None else self.spare_instances)

    def role(self, tier):
        """IAM role and instance profile name of a tier ("web" or "app")."""
        return f"{self.prefix}-{tier}"


# FR_ variable -> (Config field, parser). Parsers raise ValueError with the reason.
def _positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise ValueError("must be > 0")
        return value

    return parse


def _within(low, high, why=""):
    def parse(text):
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"must be {low}..{high}{why}")
        return value

    return parse


def _prefix(text):
    # Bucket names: lowercase letters, digits and hyphens; the longest suffix is "-deploy-bucket".
    if not text or len(text) > 40 or not all(c.islower() or c.isdigit() or c == "-" for c in text):
        raise ValueError("must be 1..40 of a-z, 0-9, -")
    return text


def _path(text):
    path = Path(text)
    return path if path.is_absolute() else PROJECT_DIR / path


def _log_level(text):
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return level


def _simulate(text):
    if text not in ("", "aws"):
        raise ValueError("must be empty or aws")
    return text


def _cidr(text):
    return str(ipaddress.ip_network(text, strict=False))


_VARIABLES = {
    "FR_PREFIX": ("prefix", _prefix),
    "FR_REGION": ("region", str),
    "FR_ENDPOINT_URL": ("endpoint_url", lambda text: text or None),
    "FR_HOST": ("host", str),
    "FR_PORT": ("port", _within(0, 65535)),
    "FR_REQUEST_TIMEOUT": ("request_timeout", _positive(float)),
    "FR_MAX_BODY": ("max_body", _positive(int)),
    "FR_POLL_WAIT": ("poll_wait", _within(1, 20, " (SQS long-poll seconds)")),
    "FR_VISIBILITY_TIMEOUT": ("visibility_timeout", _positive(int)),
    "FR_BATCH": ("batch", _within(1, 10, " (messages per SQS receive)")),
    "FR_CLIENT_TIMEOUT": ("client_timeout", _positive(float)),
    "FR_RECEIVE_DEADLINE": ("receive_deadline", _positive(float)),
    "FR_MAX_CONNECTIONS": ("max_connections", _positive(int)),
    "FR_MAX_INSTANCES": ("max_instances", _positive(int)),
    "FR_MIN_INSTANCES": ("min_instances", _within(0, 1000, " (instances kept running when idle)")),
    "FR_SPARE_INSTANCES": ("spare_instances", _within(0, 1000, " (stopped members beyond FR_MAX_INSTANCES)")),
    "FR_HIBERNATE_AFTER_LAUNCH": ("hibernate_after_launch", lambda text: max(0.0, float(text))),
    "FR_HIBERNATE_AFTER_START": ("hibernate_after_start", lambda text: max(0.0, float(text))),
    "FR_HIBERNATE": ("hibernate", lambda text: bool(_within(0, 1, " (1: hibernate, 0: plain stop)")(text))),
    "FR_SCALE_INTERVAL": ("scale_interval", _positive(float)),
    "FR_SCALE_IN_GRACE": ("scale_in_grace", lambda text: max(0.0, float(text))),
    "FR_AMI_ID": ("ami_id", str),
    "FR_INSTANCE_TYPE": ("instance_type", str),
    "FR_WEIGHTS": ("weights", _path),
    "FR_GALLERY": ("gallery", _path),
    "FR_TORCH_THREADS": ("torch_threads", lambda text: max(0, int(text))),
    "FR_LOG_LEVEL": ("log_level", _log_level),
    "FR_MOTO_PORT": ("moto_port", _within(0, 65535)),
    "FR_WEB_CIDR": ("web_cidr", _cidr),
    "FR_STATE_DIR": ("state_dir", _path),
    "FR_CACHE_SIZE": ("cache_size", lambda text: max(0, int(text))),
    "FR_WEB_INSTANCE_TYPE": ("web_instance_type", str),
    "FR_SIMULATE": ("simulate", _simulate),
    "FR_SIMULATE_TIME_SCALE": ("simulate_time_scale", _positive(float)),
    "FR_SQS_COUNT_LAG": ("sqs_count_lag", lambda text: max(0.0, float(text))),
}


def load_config(environ):
    """A Config from the FR_* variables in `environ`; ConfigError names the first bad one."""
    values = {}
    for name, (field, parse) in _VARIABLES.items():
        if name in environ:
            try:
                values[field] = parse(environ[name])
            except ValueError as e:
                raise ConfigError(f"{name}={environ[name]!r}: {e}") from None
    unknown = sorted(k for k in environ if k.startswith("FR_") and k not in _VARIABLES)
    if unknown:
        raise ConfigError(f"unknown variable {unknown[0]} (see README: Configuration)")
    config = Config(**values)
    if config.min_instances > config.max_instances:
        raise ConfigError(f"FR_MIN_INSTANCES={config.min_instances}: more than FR_MAX_INSTANCES={config.max_instances}")
    return config


def load_config_or_exit(environ=os.environ):
    """load_config for a process's start: a bad value is one line on stderr and exit 78."""
    try:
        return load_config(environ)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(EX_CONFIG)


def require_file(path, hint):
    """Exit 78 with one clear line when a file the process needs is missing."""
    if not Path(path).is_file():
        print(f"config error: {path} does not exist ({hint})", file=sys.stderr)
        sys.exit(EX_CONFIG)


def client(config, service, max_connections=10):
    """A boto3 client for `service` (thread-safe: make one per process and share it)."""
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        service,
        region_name=config.region,
        endpoint_url=config.endpoint_url,
        config=BotoConfig(
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=5,
            # Long polls hold the connection for poll_wait seconds.
            read_timeout=config.poll_wait + 10,
            max_pool_connections=max_connections,
        ),
    )


def while_refused(call, passing, patience, on_retry=None):
    """call(), made again with backoff (0.1 s doubling to 10 s) for up to `patience` seconds while AWS
    refuses it with a ClientError that `passing(error)` says will pass: the refusals AWS documents
    as eventual consistency (a new instance profile, a queue name just deleted, ...). botocore's
    own retries are for transient faults and do not cover these. `on_retry(error, pause)` is told."""
    from botocore.exceptions import ClientError

    deadline = time.monotonic() + patience
    pause = 0.1
    while True:
        try:
            return call()
        except ClientError as e:
            if not passing(e) or time.monotonic() + pause > deadline:
                raise
            if on_retry:
                on_retry(e, pause)
            threading.Event().wait(pause)
            pause = min(pause * 2, 10.0)


def error_code(error):
    """The AWS error code of a botocore ClientError."""
    return error.response.get("Error", {}).get("Code", "")


def queue_urls(sqs, config):
    """(request queue URL, response queue URL); they are created by provisioning, not here."""
    return (
        sqs.get_queue_url(QueueName=config.request_queue)["QueueUrl"],
        sqs.get_queue_url(QueueName=config.response_queue)["QueueUrl"],
    )


def queue_depth(sqs, queue_url):
    """(visible, in flight) messages of a queue."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def receipt_entries(receipts, **extra):
    """Entries of an SQS *Batch call (delete, change visibility) for these receipt handles."""
    return [dict(Id=str(i), ReceiptHandle=receipt, **extra) for i, receipt in enumerate(receipts)]


# The web tier and the autoscaler run on the same host and leave each other a small JSON file in
# FR_STATE_DIR: the autoscaler its last decision (for the status page), the web tier how many
# requests wait for an answer (the autoscaler's exact count of the work, see autoscaler.py).
AUTOSCALER_STATE = "autoscaler.json"
WEB_STATE = "web.json"


def write_state(config, name, **fields):
    """Leave `fields` (and the time) in FR_STATE_DIR/`name`, written whole, never half."""
    path = Path(config.state_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(fields, at=time.time())))
    tmp.replace(path)


def read_state(config, name, max_age=None):
    """The fields left in FR_STATE_DIR/`name`, or None when there are none (or, with `max_age`,
    when they are older than that many seconds: their writer is gone)."""
    try:
        fields = json.loads((Path(config.state_dir) / name).read_text())
    except (OSError, ValueError):
        return None
    if max_age is not None and not time.time() - fields.get("at", 0) <= max_age:
        return None
    return fields


@dataclass(frozen=True)
class Request:
    """Web tier -> worker: the image of file stem `stem` is in the input bucket under `key`."""

    id: str
    key: str
    stem: str
    reply_to: str


@dataclass(frozen=True)
class Reply:
    """Worker -> web tier, for the image of file stem `stem`: exactly one of `name` (the person's) and
    `error` is set.

    `model_ms` is the worker's time in the model, so the web tier can tell what the plumbing cost."""

    id: str
    stem: str
    name: str | None = None
    error: str | None = None
    model_ms: str | None = None


def encode(message):
    """JSON text of a Request or Reply; ValueError if it would not fit an SQS message here."""
    body = json.dumps({k: v for k, v in message.__dict__.items() if v is not None}, separators=(",", ":"))
    if len(body.encode()) > MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {len(body.encode())} bytes exceeds {MAX_MESSAGE_BYTES}")
    return body


def decode(kind, body):
    """A `kind` (Request or Reply) from JSON text; ValueError if it is not one."""
    try:
        fields = json.loads(body)
        message = kind(**fields)
    except (TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"not a {kind.__name__} message: {e}") from None
    if not all(isinstance(v, (str, type(None))) for v in message.__dict__.values()):
        raise ValueError(f"not a {kind.__name__} message: fields must be strings")
    if kind is Reply and (message.name is None) == (message.error is None):
        raise ValueError("a Reply has exactly one of name and error")
    return message


def quantile(ordered, q):
    """The q-quantile (nearest rank) of sorted values, or None when there are none."""
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 6)


def logfmt_value(value):
    """`value` as a logfmt field's value: quoted when it holds a space, `=` or a quote."""
    text = str(value)
    if any(c in text for c in ' ="') or not text:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def setup_logging(level="INFO"):
    """One line per event to stderr (journald collects it on AWS)."""
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def stop_on_signals(stop):
    """SIGTERM/SIGINT: the first sets `stop` (finish current work, then exit 0); the second exits now."""
    import signal

    def handle(signum, frame):
        if stop.is_set():
            os._exit(128 + signum)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
