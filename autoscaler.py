"""Autoscaler: keeps the app tier sized to the work, from 0 to FR_MAX_INSTANCES running instances.

The app tier is a fixed pool of EC2 instances tagged Name=app-tier-instance-1 ... -N (and
fr-prefix=FR_PREFIX), made once and kept stopped; scaling only starts and stops them. Every
FR_SCALE_INTERVAL seconds it reads the request queue's depth (visible and in-flight messages: one
get_queue_attributes call) and the pool's states (one describe_instance_status call; the pool's
members are described in full only when it may have changed), asks `desired` how many should run,
and starts or stops the difference in one call. Instances missing from the pool (terminated,
deleted) are recreated stopped from FR_AMI_ID. Each decision that changes something is
logged as one key=value line and written to FR_STATE_DIR/autoscaler.json for the status page.

The same code drives AWS or, in local mode, moto's EC2 API, where the local launcher runs a
worker process per running instance. Stops on SIGTERM/SIGINT after the step in progress (exit 0).
"""
import json
import logging
import math
import threading
import time

import common
from common import ACTIVE_STATES, APP_TIER_NAME, POOL_STATES, PREFIX_TAG, describe_pool, queue_depth

log = logging.getLogger("autoscaler")

# The pool is described in full at least this often, even when every member still looks as expected
# (to see an instance tagged into it from outside).
POOL_REFRESH_SECONDS = 60


def desired(visible, in_flight, running, max_instances, idle_seconds=math.inf, grace=0.0):
    """How many app instances should run.

    Every message waiting or being worked on wants an instance (in-flight ones included: a busy
    instance is never idle), capped at `max_instances`. While messages are still waiting, no
    running instance is stopped: each of them is about to take one. When there is no work at all,
    running instances stay until it has been gone `grace` seconds (`idle_seconds` so far), so that
    a client sending one request after another does not see an instance stopped and started again
    in the moment between its requests.
    """
    if visible + in_flight == 0 and idle_seconds < grace:
        return min(running, max_instances)
    target = min(max_instances, visible + in_flight)
    if visible > 0:
        target = max(target, min(running, max_instances))
    return target


def instance_name(index):
    return f"{APP_TIER_NAME}-{index}"


def repair_pool(ec2, config, pool):
    """Create, stopped, the pool instances missing from `pool`; their names."""
    present = {i["name"] for i in pool}
    missing = [instance_name(n) for n in range(1, config.max_instances + 1) if instance_name(n) not in present]
    if not missing:
        return []
    if not config.ami_id:
        log.error("event=pool_incomplete missing=%d detail=FR_AMI_ID is not set, cannot create instances", len(missing))
        return []
    created = []
    for name in missing:
        reply = ec2.run_instances(
            ImageId=config.ami_id,
            InstanceType=config.instance_type,
            MinCount=1,
            MaxCount=1,
            IamInstanceProfile={"Name": config.role("app")},
            TagSpecifications=[
                {
                    "ResourceType": "instance",
                    "Tags": [{"Key": "Name", "Value": name}, {"Key": PREFIX_TAG, "Value": config.prefix}],
                }
            ],
        )
        created.append(reply["Instances"][0]["InstanceId"])
    ec2.stop_instances(InstanceIds=created)
    log.info("event=pool_repaired created=%s", ",".join(missing))
    return missing


class Autoscaler:
    def __init__(self, config, sqs, ec2):
        self.config = config
        self.sqs = sqs
        self.ec2 = ec2
        self.request_url, _ = common.queue_urls(sqs, config)
        self.last = None
        self.idle_since = None
        self.pool = None  # [{id, name}] from describe_pool
        self.pool_described = 0.0

    def observe_pool(self):
        """The pool as describe_pool gives it ({id, name, state}, by number), cheaply: its members
        are remembered and only their states are asked for (common.instance_states), unless one of
        them is gone or terminated, the pool is incomplete (being repaired, or not yet provisioned)
        or the memory is old, when the pool is described in full again."""
        from botocore.exceptions import ClientError

        remembered = self.pool is not None and len(self.pool) >= self.config.max_instances
        if remembered and time.monotonic() - self.pool_described < POOL_REFRESH_SECONDS:
            try:
                states = common.instance_states(self.ec2, [i["id"] for i in self.pool])
            except ClientError as e:  # an instance deleted since: InvalidInstanceID.NotFound
                log.info("event=pool_changed error=%s", e)
                states = {}
            if all(states.get(i["id"]) in POOL_STATES for i in self.pool):
                return [dict(i, state=states[i["id"]]) for i in self.pool]
        pool = describe_pool(self.ec2, self.config)
        self.pool = [{"id": i["id"], "name": i["name"]} for i in pool]
        self.pool_described = time.monotonic()
        return pool

    def step(self):
        """Observe, decide, act once; the decision as a dict."""
        visible, in_flight = queue_depth(self.sqs, self.request_url)
        pool = self.observe_pool()
        if len(pool) < self.config.max_instances and repair_pool(self.ec2, self.config, pool):
            pool = self.observe_pool()  # described again: the pool remembered is incomplete
        active = [i for i in pool if i["state"] in ACTIVE_STATES]
        now = time.monotonic()
        if visible + in_flight:
            self.idle_since = None
        elif self.idle_since is None:
            self.idle_since = now
        idle = now - self.idle_since if self.idle_since is not None else 0.0
        target = desired(visible, in_flight, len(active), self.config.max_instances, idle, self.config.scale_in_grace)
        started, stopped = [], []
        if target > len(active):
            # Lowest numbers first; an instance still stopping is started on a later step.
            started = [i["id"] for i in pool if i["state"] == "stopped"][: target - len(active)]
            if started:
                self.ec2.start_instances(InstanceIds=started)
        elif target < len(active):
            # Highest numbers first. A busy worker that is stopped finishes its batch first.
            stopped = [i["id"] for i in active[target:]]
            self.ec2.stop_instances(InstanceIds=stopped)
        decision = dict(visible=visible, in_flight=in_flight, running=len(active), desired=target,
                        started=len(started), stopped=len(stopped))
        if started or stopped or decision != self.last:
            log.info("event=decision %s", " ".join(f"{k}={v}" for k, v in decision.items()))
            self.publish(decision)
        self.last = decision
        return decision

    def publish(self, decision):
        """Leave the decision where the status page reads it (written whole, never half)."""
        path = common.autoscaler_state_path(self.config)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dict(decision, at=time.time())))
        tmp.replace(path)

    def run(self, stop):
        from botocore.exceptions import BotoCoreError, ClientError

        log.info("event=ready max_instances=%d interval=%s", self.config.max_instances, self.config.scale_interval)
        while not stop.is_set():
            try:
                self.step()
            except (BotoCoreError, ClientError) as e:
                log.warning("event=step_failed error=%s", e)
            stop.wait(self.config.scale_interval)


def main():
    config = common.load_config_or_exit()
    common.setup_logging(config.log_level)
    stop = threading.Event()
    common.stop_on_signals(stop)
    Autoscaler(config, common.client(config, "sqs"), common.client(config, "ec2")).run(stop)
    log.info("event=stopped")


if __name__ == "__main__":
    main()
