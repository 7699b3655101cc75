"""What a person or Prometheus watching the service sees: /status and /metrics of the web tier.

Metrics counts what this web tier served (by status, latency); Status gathers the rest (queue
depths, the app instances' states, the autoscaler's last decision from FR_STATE_DIR) with at most a
few AWS calls a second however often the pages refresh; prometheus_text writes it all in
Prometheus' text format. Status also samples a few numbers every 2 s for the status page's chart
(the last five minutes of running instances, request-queue depth and answers per second). The page
that shows it all is pages/status.html (it draws the chart itself), and the JSON of /status.
"""

import threading
import time
from collections import Counter, deque

import common
from common import quantile
from core import cloud, statefiles
from scaling import pool

log = common.EventLog("status")

# Latency quantiles are over this many recent answers.
LATENCY_WINDOW = 1000
STATUS_CACHE_SECONDS = 1.0
# The status page's chart: a sample every HISTORY_SECONDS (two cheap AWS calls), the last
# HISTORY_SAMPLES of them (5 min).
HISTORY_SECONDS = 2.0
HISTORY_SAMPLES = 150


class Metrics:
    """What this web tier has served since it started, for /status and /metrics."""

    def __init__(self, window=LATENCY_WINDOW):
        self._lock = threading.Lock()
        self.by_status = Counter()
        self.recent = deque(maxlen=window)
        self.latency_sum = 0.0

    def record(self, status, seconds):
        with self._lock:
            self.by_status[status] += 1
            if status == 200:
                self.recent.append(seconds)
                self.latency_sum += seconds

    def snapshot(self):
        with self._lock:
            recent = sorted(self.recent)
            by_status = dict(self.by_status)
            latency_sum = self.latency_sum
        return {
            "answered": by_status.get(200, 0),
            "errors": {str(k): v for k, v in sorted(by_status.items()) if k >= 400},
            "latency_p50_s": quantile(recent, 0.5),
            "latency_p95_s": quantile(recent, 0.95),
            "latency_sum_s": round(latency_sum, 6),
            "by_status": {str(k): v for k, v in sorted(by_status.items())},
        }


class Status:
    """The service's state for /status and /metrics, read at most every STATUS_CACHE_SECONDS."""

    def __init__(self, config, sqs, ec2, queues, web):
        """`queues`: {name: URL} whose depths to show; `web()`: this tier's own counters."""
        self.config = config
        self.sqs = sqs
        self.ec2 = ec2
        self.queues = queues
        self.web = web
        self._lock = threading.Lock()
        self._cache = (0.0, None)
        self.history = deque(maxlen=HISTORY_SAMPLES)  # [epoch s, running, request queue depth, answers/s]

    def read(self):
        """Queue depths, app instances, this tier's counters and the autoscaler's last decision.

        Cached for STATUS_CACHE_SECONDS, so refreshing pages cost at most a few AWS calls a second."""
        with self._lock:
            at, cached = self._cache
            if cached and time.monotonic() - at < STATUS_CACHE_SECONDS:
                return dict(cached, web=self.web())
            status = {"queues": None, "app_instances": None, "autoscaler": None, "error": None}
            status["max_instances"] = self.config.max_instances  # the chart's scale of instances
            try:
                status["queues"] = {
                    name: dict(zip(("visible", "in_flight"), cloud.queue_depth(self.sqs, url)))
                    for name, url in self.queues.items()
                }
                states = Counter(i["state"] for i in pool.describe(self.ec2, self.config))
                status["app_instances"] = {state: states.get(state, 0) for state in pool.POOL_STATES}
            except Exception as e:
                status["error"] = f"AWS unavailable: {type(e).__name__}"
            status["autoscaler"] = statefiles.read_state(self.config, statefiles.AUTOSCALER_STATE)
            self._cache = (time.monotonic(), status)
            return dict(status, web=self.web())

    def chart(self):
        """The samples for the chart, oldest first."""
        return list(self.history)

    def sample(self, stop):
        """Every HISTORY_SECONDS until `stop` is set: keep a sample of what the chart shows.

        Cheaply, as the autoscaler does (this runs all the time, watched or not): the pool through a
        pool.Watch, and only the request queue's depth."""
        last, watch = None, pool.Watch(self.ec2, self.config)
        failures = common.Failures(log, "sample_failed")
        while not stop.wait(HISTORY_SECONDS):
            now, answered = time.monotonic(), self.web()["answered"]
            rate = 0.0 if last is None else (answered - last[1]) / (now - last[0])
            last = (now, answered)
            try:
                running = sum(i["state"] == "running" for i in watch.observe())
                depth = sum(cloud.queue_depth(self.sqs, self.queues["request"]))
                failures.recovered()
            except Exception as e:  # a gap in the chart, never a sampler gone for good
                failures.failed(e)
                running = depth = None
            self.history.append([round(time.time(), 1), running, depth, round(rate, 2)])


def prometheus_text(status):
    """The status counters in Prometheus text exposition format (version 0.0.4)."""
    lines = []

    def metric(name, kind, help_text, samples):
        """samples: (name suffix, {label: value}, value)."""
        lines.extend([f"# HELP face_rec_{name} {help_text}", f"# TYPE face_rec_{name} {kind}"])
        for suffix, labels, value in samples:
            label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
            lines.append(f"face_rec_{name}{suffix}{{{label_text}}} {value}" if labels else f"face_rec_{name}{suffix} {value}")

    web, queues, pool = status["web"], status["queues"] or {}, status["app_instances"] or {}
    decision = status["autoscaler"] or {}
    metric(
        "requests_total",
        "counter",
        "Uploads answered by this web tier, by HTTP status.",
        [("", {"status": code}, count) for code, count in web["by_status"].items()],
    )
    if web["table_hits"] is not None:
        metric(
            "results_table_hits_total",
            "counter",
            "Uploads answered from the results table, without a worker.",
            [("", {}, web["table_hits"])],
        )
    metric("requests_in_flight", "gauge", "Uploads waiting for their answer at this web tier.", [("", {}, web["in_flight"])])
    metric(
        "request_latency_seconds",
        "summary",
        f"Latency of answered uploads (quantiles over the last {LATENCY_WINDOW}).",
        [
            ("", {"quantile": q}, web[key])
            for q, key in (("0.5", "latency_p50_s"), ("0.95", "latency_p95_s"))
            if web[key] is not None
        ]
        + [("_sum", {}, web["latency_sum_s"]), ("_count", {}, web["answered"])],
    )
    metric(
        "queue_messages",
        "gauge",
        "Messages in the service's queues.",
        [("", {"queue": q, "state": state}, n) for q, depth in queues.items() for state, n in depth.items()],
    )
    metric(
        "app_instances",
        "gauge",
        "App-tier pool instances by EC2 state.",
        [("", {"state": state}, n) for state, n in pool.items()],
    )
    metric(
        "autoscaler_desired_instances",
        "gauge",
        "The autoscaler's last desired instance count.",
        [("", {}, decision["desired"])] if "desired" in decision else [],
    )
    metric(
        "aws_up",
        "gauge",
        "1 when the queues and the pool could be read for this scrape.",
        [("", {}, 0 if status["error"] else 1)],
    )
    return "\n".join(lines) + "\n"
