"""Configuration: every FR_* environment variable, read once by `load_config` into a Config, and
the names derived from FR_PREFIX (buckets, queues, roles, tags). Every variable is listed in the
README; the same code talks to AWS or, with FR_ENDPOINT_URL set, to a moto server standing in for
it (local mode and tests)."""

import dataclasses
import ipaddress
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

EX_CONFIG = 78
PROJECT_DIR = Path(__file__).resolve().parent.parent
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
    # Days an upload stays in the input bucket (a lifecycle rule): the course's grader reads the
    # buckets right after its run, an operator may want the week's uploads; then they cost nothing.
    upload_days: int = 7
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
    # A member is hibernated only this long after its launch, and after its guest said it resumed
    # (core/guest.py); sooner, the guest would drop the request (pool.hibernation_unready says why).
    hibernate_after_launch: float = 120.0
    hibernate_after_resume: float = 32.0
    # A member with no work this long, whose autoscaler has not been heard from as long, powers
    # itself off (core/heartbeat.py; 0: never).
    idle_stop: float = 300.0
    # Cold members (stopped plainly) booted once and hibernated: by provisioning, and while idle (scaling/warming.py).
    warm_up: bool = True
    scale_interval: float = 0.5
    scale_in_grace: float = 0.5
    ami_id: str = ""
    instance_type: str = "t3.small"
    weights: Path = PROJECT_DIR / "var/stand-in/weights.pt"
    gallery: Path = PROJECT_DIR / "var/stand-in/gallery.pt"
    # The key of changes to the gallery (Authorization: Bearer), or the SSM parameter that holds it
    # (a SecureString: on AWS the key is in no file); neither: changes are off.
    admin_token: str = dataclasses.field(default="", repr=False)
    admin_token_parameter: str = ""
    # A face farther than this from every gallery entry is a stranger's: named "unknown" (None:
    # the nearest entry always names it, as the course's reference model does).
    match_threshold: float | None = None
    torch_threads: int = 0
    log_level: str = "INFO"
    moto_port: int = 5000
    web_cidr: str = ""
    state_dir: Path = PROJECT_DIR / "var/state"
    # Answers kept in the DynamoDB table `results_table_name`, reused for the same image and model.
    results_table: bool = False
    web_instance_type: str = "t3.micro"
    # Alarms' address (subscribed to the alarms' topic: deploy/alarms.py), and the monthly budget (None: none).
    alarm_email: str = ""
    budget_usd: float | None = None
    # Local mode and tests: "aws" makes the moto server behave like AWS where it matters
    # (simulation/awslike/), with every simulated delay multiplied by simulate_time_scale.
    simulate: str = ""
    simulate_time_scale: float = 1.0
    # How far behind the truth SQS's approximate counts may be (GetQueueAttributes reference: up
    # to a minute after producers stop); the autoscaler trusts them only past this.
    sqs_count_lag: float = 60.0
    # Not variables: what the local stack tells each worker it forks of the instance it stands for
    # (on AWS the worker asks the instance metadata service, and systemd for the agent's state).
    instance_id: str = ""
    agent_done_file: Path | None = None

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
    def results_table_name(self):
        """The results table (FR_RESULTS_TABLE): the name the course's grader looks for."""
        return f"{self.prefix}-dynamoDB"

    @property
    def gallery_bucket(self):
        """The gallery (core/gallery.py): its snapshots and people's example images."""
        return f"{self.prefix}-gallery-bucket"

    @property
    def admin_key_parameter(self):
        """The SSM parameter provisioning keeps the gallery's admin key in (deploy/adminkey.py)."""
        return f"/{self.prefix}/admin-token"

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


def _flag(meaning):
    parse = _within(0, 1, f" ({meaning})")
    return lambda text: bool(parse(text))


def _prefix(text):
    # Bucket names: lowercase letters, digits and hyphens, 63 at most; the longest suffix is "-gallery-bucket".
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


def _admin_token(text):
    if text and (len(text) < 16 or not text.isascii() or not text.isprintable() or " " in text):
        raise ValueError("must be at least 16 printable ASCII characters, no spaces")
    return text


def _email(text):
    if text and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", text):
        raise ValueError(f"{text!r} is no email address")
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
    "FR_UPLOAD_DAYS": ("upload_days", _positive(int)),
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
    "FR_HIBERNATE_AFTER_RESUME": ("hibernate_after_resume", lambda text: max(0.0, float(text))),
    "FR_HIBERNATE": ("hibernate", _flag("1: hibernate, 0: plain stop")),
    "FR_IDLE_STOP": ("idle_stop", lambda text: max(0.0, float(text))),
    "FR_WARM_UP": ("warm_up", _flag("1: warm cold members up, 0: leave them cold")),
    "FR_SCALE_INTERVAL": ("scale_interval", _positive(float)),
    "FR_SCALE_IN_GRACE": ("scale_in_grace", lambda text: max(0.0, float(text))),
    "FR_AMI_ID": ("ami_id", str),
    "FR_INSTANCE_TYPE": ("instance_type", str),
    "FR_WEIGHTS": ("weights", _path),
    "FR_GALLERY": ("gallery", _path),
    "FR_ADMIN_TOKEN": ("admin_token", _admin_token),
    "FR_ADMIN_TOKEN_PARAMETER": ("admin_token_parameter", str),
    "FR_MATCH_THRESHOLD": ("match_threshold", lambda text: _positive(float)(text) if text else None),
    "FR_TORCH_THREADS": ("torch_threads", lambda text: max(0, int(text))),
    "FR_LOG_LEVEL": ("log_level", _log_level),
    "FR_MOTO_PORT": ("moto_port", _within(0, 65535)),
    "FR_WEB_CIDR": ("web_cidr", _cidr),
    "FR_STATE_DIR": ("state_dir", _path),
    "FR_RESULTS_TABLE": ("results_table", _flag("1: answers kept in the results table, 0: none")),
    "FR_WEB_INSTANCE_TYPE": ("web_instance_type", str),
    "FR_ALARM_EMAIL": ("alarm_email", _email),
    "FR_BUDGET_USD": ("budget_usd", lambda text: _positive(float)(text) if text else None),
    "FR_SIMULATE": ("simulate", _simulate),
    "FR_SIMULATE_TIME_SCALE": ("simulate_time_scale", _positive(float)),
    "FR_SQS_COUNT_LAG": ("sqs_count_lag", lambda text: max(0.0, float(text))),
}


# Variables whose values are never written anywhere: not in an error line, not in the web host's settings.
SECRETS = ("FR_ADMIN_TOKEN",)


def _rendered(value):
    if isinstance(value, bool):
        return str(int(value))
    return str(value)


def environment(config, names):
    """The FR_* variables `names` that load_config reads back as `config`'s values (a variable
    whose value is None, the default that means "derived", is left out)."""
    fields = {name: field for name, (field, _) in _VARIABLES.items()}
    return {name: _rendered(getattr(config, fields[name])) for name in names if getattr(config, fields[name]) is not None}


def environment_text(variables):
    """{name: value} as an environment file's lines (`NAME=value`), as systemd's EnvironmentFile reads them."""
    return "".join(f"{name}={value}\n" for name, value in variables.items())


def read_environment(text):
    """The {FR_* name: value} of an environment file's lines (environment_text's inverse)."""
    return dict(line.split("=", 1) for line in text.splitlines() if line.startswith("FR_"))


def variables():
    """Every FR_* variable's name."""
    return list(_VARIABLES)


def load_config(environ):
    """A Config from the FR_* variables in `environ`; ConfigError names the first bad one."""
    values = {}
    for name, (field, parse) in _VARIABLES.items():
        if name in environ:
            try:
                values[field] = parse(environ[name])
            except ValueError as e:
                shown = "(not shown)" if name in SECRETS else repr(environ[name])
                raise ConfigError(f"{name}={shown}: {e}") from None
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
