"""Autoscaler: keeps the app tier sized to the work, from 0 to FR_MAX_INSTANCES running instances.

The app tier is a fixed pool of EC2 instances (scaling/pool.py), made once and kept stopped; scaling only
starts and stops them. Every FR_SCALE_INTERVAL seconds (start to start), and at once when the web tier's count
asks for more members than the last decision gave, it reads the work and the pool's states,
asks `desired` how many should run, and starts or stops the difference in one call (`pool.plan`:
only calls EC2 accepts in the members' states). Members missing from the pool (terminated,
deleted) are launched again from FR_AMI_ID. Each decision that changes something is logged as one
key=value line and left in FR_STATE_DIR/autoscaler.json for the status page.

The work: the web tier on this host leaves in FR_STATE_DIR/web.json how many requests wait for an
answer, exactly and at once. SQS's own counts (one get_queue_attributes call) are approximate and
may trail the truth by up to a minute after the work stops, which would hold instances up long
after the last answer. So the web tier's count decides. Messages SQS shows beyond it are waited
for by nobody (a crashed web tier's, sent before this one started): no instance starts for them
(a worker that takes one once its client has stopped waiting acknowledges it unanswered). The
web tier also says how many of its requests were queued longer ago than SQS's counts can lag
(FR_SQS_COUNT_LAG): SQS showing fewer than those means messages gone (a queue purged or made
again), and the pool is not held up for them until they time out. A web tier gone (its file no
longer rewritten) waits on nothing; with no web tier here at all (no web.json), SQS's counts are
all there is.

The same code drives AWS or, in local mode, moto's EC2 API, where the local launcher runs a
worker process per running instance. Stops on SIGTERM/SIGINT after the step in progress (exit 0).
"""

import math
import threading
import time

import common
from core import cloud, heartbeat, settings, statefiles
from scaling import metrics, pool

log = common.EventLog("autoscaler")

# How often, between two steps, the web tier's count of the work (a local file) is read for new work.
WORK_CHECK = 0.05


def desired(visible, in_flight, running, max_instances, idle_seconds=math.inf, grace=0.0, floor=0):
    """How many app instances should run, never fewer than `floor` (the warm floor).

    Every message waiting or being worked on wants an instance (in-flight ones included: a busy
    instance is never idle), capped at `max_instances`. While messages are still waiting, no
    running instance is stopped: each of them is about to take one. When there is no work at all,
    running instances stay until it has been gone `grace` seconds (`idle_seconds` so far), so that
    a client sending one request after another does not see an instance stopped and started again
    in the moment between its requests.
    """
    if visible + in_flight == 0 and idle_seconds < grace:
        return max(min(running, max_instances), floor)
    target = min(max_instances, visible + in_flight)
    if visible > 0:
        target = max(target, min(running, max_instances))
    return max(target, floor)


def pause(began, now, interval, idle_since=None, grace=0.0):
    """Seconds to wait, at monotonic `now`, before the step after the one begun at `began`: the
    steps are FR_SCALE_INTERVAL apart from start to start (the step's own time is not added), and the
    one that may stop instances comes when the work has been gone `grace` seconds (since
    `idle_since`), not up to an interval after. Never less than a tenth of the interval, so that
    steps slower than it (a loaded API) do not follow one another without a pause."""
    wait = interval - (now - began)
    if idle_since is not None and now < idle_since + grace:
        wait = min(wait, idle_since + grace - now)
    return max(wait, interval / 10)


def wants_more(web, last, max_instances):
    """Whether the web tier's count now (statefiles.read_waiting: (waiting, long queued) or None)
    asks for more members than the `last` step's decision gave: more requests wait than it wanted
    members and than it saw waiting, and it wanted fewer than `max_instances`. Then the next step
    comes at once, not at the end of its pause. Requests it saw already (among them those whose
    messages are gone, which want no member) never bring a step forward."""
    if web is None or last is None or last["desired"] >= max_instances:
        return False
    return web[0] > max(last["desired"], last["waiting"] or 0)


def wait_for_work(stop, seconds, config, last):
    """Wait `seconds` (or until `stop` is set), reading the web tier's count every WORK_CHECK s,
    and return early when it wants more (wants_more): the first upload after an idle spell starts
    a member within about WORK_CHECK s, not up to FR_SCALE_INTERVAL later. A count that cannot be
    read brings nothing forward (the next step says why)."""
    deadline = time.monotonic() + seconds
    while not stop.wait(max(0.0, min(WORK_CHECK, deadline - time.monotonic()))):
        if time.monotonic() >= deadline:
            return
        try:
            if wants_more(statefiles.read_waiting(config), last, config.max_instances):
                return
        except (OSError, KeyError, TypeError):  # fields missing or of the wrong type: the step says so
            pass


def work(waiting, long_queued, visible, in_flight):
    """(visible, in flight) messages for `desired`, from the web tier's exact count and SQS's.

    `waiting`: requests the web tier waits on (None: no web tier here, SQS's counts are all there
    is); `long_queued` of them have had their messages on the queue for longer than SQS's counts
    may lag, so SQS shows each of them unless its message is gone (a queue purged or made again).
    The requests waited on, less those gone, are the work; SQS's in-flight count only says how many
    of them a worker holds, and what it shows beyond them nobody waits for (a crashed web tier's).
    """
    if waiting is None:
        return visible, in_flight
    known = max(0, waiting - max(0, long_queued - visible - in_flight))
    held = min(known, in_flight)
    return known - held, held


class Autoscaler:
    """Reads the work, asks `desired`, tells the pool (pool.Pool, which owns what it remembers of
    the members between steps)."""

    def __init__(self, config, sqs, ec2, cloudwatch=None):
        self.config = config
        self.sqs = sqs
        self.request_url, _ = cloud.queue_urls(sqs, config)
        self.last = None
        self.idle_since = None
        self.pool = pool.Pool(ec2, config)
        self.state_writes = common.Failures(log, "state_write_failed")
        self.beat = heartbeat.Beat(config, sqs, self.request_url)  # the members' dead man's switch
        self.metrics = metrics.Metrics(config, cloudwatch)  # for the alarms (None: none published)

    def observe_work(self):
        """((waiting, long queued), visible, in flight): the web tier's counts (None without a web
        tier) and SQS's."""
        visible, in_flight = cloud.queue_depth(self.sqs, self.request_url)
        return statefiles.read_waiting(self.config), visible, in_flight

    def step(self):
        """Observe, decide, act once; the decision as a dict."""
        web, sqs_visible, sqs_in_flight = self.observe_work()
        waiting, long_queued = web or (None, 0)
        members = self.pool.observe()
        self.metrics.observed(members)
        now = time.monotonic()
        visible, in_flight = work(waiting, long_queued, sqs_visible, sqs_in_flight)
        if visible + in_flight:
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = now
        idle = now - self.idle_since if self.idle_since is not None else 0.0
        running = pool.active(members)
        target = desired(
            visible, in_flight, running, self.config.max_instances, idle, self.config.scale_in_grace, self.config.min_instances
        )
        started, stopped = self.pool.resize(members, target, idle=not visible + in_flight)
        decision = dict(
            waiting=waiting,
            visible=visible,
            in_flight=in_flight,
            running=running,
            desired=target,
            started=len(started),
            stopped=len(stopped),
        )
        if started or stopped or decision != self.last:
            log.info("decision", **decision)
            try:  # for the status page only: a full disk must not stop the scaling
                statefiles.write_state(self.config, statefiles.AUTOSCALER_STATE, **decision)
                self.state_writes.recovered()
            except OSError as e:
                self.state_writes.failed(e)
        self.last = decision
        return decision

    def run(self, stop):
        """Step every FR_SCALE_INTERVAL until `stop` is set. A step that fails, for any reason (AWS
        refusing, a disk full, an instance of a shape not seen before), is said once per kind and
        the next step tried: never a crash, which would restart the process and hold the pool for
        its first grace."""
        failures = common.Failures(log, "step_failed")
        log.info(
            "ready",
            max_instances=self.config.max_instances,
            pool_size=self.config.pool_size,
            floor=self.config.min_instances,
            interval=self.config.scale_interval,
        )
        while not stop.is_set():
            began = time.monotonic()
            try:
                self.step()
                failures.recovered()
                self.beat.heard()
            except Exception as e:
                failures.failed(e)
                self.metrics.failed()
            self.metrics.tick()
            config = self.config
            seconds = pause(began, time.monotonic(), config.scale_interval, self.idle_since, config.scale_in_grace)
            wait_for_work(stop, seconds, config, self.last)


def main():
    config = settings.load_config_or_exit()
    common.setup_logging(config.log_level)
    stop = threading.Event()
    common.stop_on_signals(stop)
    clients = (cloud.client(config, name) for name in ("sqs", "ec2", "cloudwatch"))
    Autoscaler(config, *clients).run(stop)
    log.info("stopped")


if __name__ == "__main__":
    main()
