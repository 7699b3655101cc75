"""What the autoscaler tells CloudWatch, for the alarms provisioning makes (deploy/alarms.py): every
PUBLISH_SECONDS, MembersNotStopped (the pool's members pending, running or stopping at its last
observation) and StepFailures (its steps that failed since the last publish), in the namespace
FaceRec with the dimension Prefix. One PutMetricData call every 30 s: about 86,400 a month ($0.86 at
$0.01 per 1,000), and two custom metrics ($0.30 a month each). A failed publish is said once, and
its failures are sent with the next one."""

import math
import time

import common

log = common.EventLog("autoscaler")

NAMESPACE = "FaceRec"
METRICS = ("StepFailures", "MembersNotStopped")

# Twice a minute: every alarm period (60 s) has a sample, whatever a step takes.
PUBLISH_SECONDS = 30.0


class Metrics:
    def __init__(self, config, cloudwatch, clock=time.monotonic):
        self.config, self.cloudwatch, self.clock = config, cloudwatch, clock
        self.not_stopped, self.failures = 0, 0
        self.due = -math.inf
        self.errors = common.Failures(log, "metrics_failed")

    def observed(self, members):
        self.not_stopped = sum(m["state"] != "stopped" for m in members)

    def failed(self):
        self.failures += 1

    def tick(self):
        """Publish, once PUBLISH_SECONDS have passed since the last publish."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self.cloudwatch is None or self.clock() < self.due:
            return
        ours = [{"Name": "Prefix", "Value": self.config.prefix}]
        data = [
            {"MetricName": "MembersNotStopped", "Dimensions": ours, "Value": self.not_stopped, "Unit": "Count"},
            {"MetricName": "StepFailures", "Dimensions": ours, "Value": self.failures, "Unit": "Count"},
        ]
        try:
            self.cloudwatch.put_metric_data(Namespace=NAMESPACE, MetricData=data)
            self.errors.recovered()
            self.failures = 0
        except (BotoCoreError, ClientError) as e:
            self.errors.failed(e)
        self.due = self.clock() + PUBLISH_SECONDS
