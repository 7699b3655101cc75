import unittest

from botocore.exceptions import ClientError

from core import settings
from deploy import alarms
from scaling import metrics


class FakeCloudWatch:
    def __init__(self):
        self.sent, self.refuse = [], False

    def put_metric_data(self, Namespace, MetricData):
        if self.refuse:
            raise ClientError({"Error": {"Code": "Throttling", "Message": "slow down"}}, "PutMetricData")
        self.sent.append((Namespace, {d["MetricName"]: d["Value"] for d in MetricData}))


class MetricsTest(unittest.TestCase):
    def test_members_not_stopped_and_failed_steps_are_published_once_a_minute_and_kept_over_a_failed_publish(self):
        clock, cloudwatch = [0.0], FakeCloudWatch()
        published = metrics.Metrics(settings.load_config({"FR_PREFIX": "blue"}), cloudwatch, clock=lambda: clock[0])
        published.observed([{"state": s} for s in ("running", "pending", "stopping", "stopped", "stopped")])
        published.failed()
        published.tick()
        published.failed()
        clock[0] = metrics.PUBLISH_SECONDS - 1
        published.tick()  # not yet
        self.assertEqual(cloudwatch.sent, [(alarms.NAMESPACE, {"MembersNotStopped": 3, "StepFailures": 1})])
        clock[0] = metrics.PUBLISH_SECONDS
        cloudwatch.refuse = True
        with self.assertLogs("autoscaler", "WARNING"):
            published.tick()
        cloudwatch.refuse = False
        published.observed([{"state": "stopped"}])
        clock[0] = 2 * metrics.PUBLISH_SECONDS
        published.tick()
        self.assertEqual(
            cloudwatch.sent[-1], (alarms.NAMESPACE, {"MembersNotStopped": 0, "StepFailures": 1}), "kept over the refusal"
        )
        self.assertEqual(set(alarms.METRICS), set(cloudwatch.sent[-1][1]), "what the alarms watch")


if __name__ == "__main__":
    unittest.main()
