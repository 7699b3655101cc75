"""Removing a deployment: what teardown's plan does, and what is still there afterwards."""

from core import cloud, settings
from deploy.base import INSTANCE_PATIENCE, ProvisionError, refused_with
from deploy.storage import TABLE_PATIENCE
from scaling import pool

# Teardown terminates what it finds, waits, and looks again, at most this many times.
TEARDOWN_ROUNDS = 5


class TeardownSteps:
    """Provisioner's removals, and the check that nothing is left."""

    def _release_addresses(self):
        for address in self.ec2.describe_addresses(
            Filters=[{"Name": f"tag:{settings.PREFIX_TAG}", "Values": [self.config.prefix]}]
        )["Addresses"]:
            self.ec2.release_address(AllocationId=address["AllocationId"])
            self.out(f"{'removed':<12} Elastic IP {address['PublicIp']}")

    def _remove_security_group(self, name):
        for group in self.ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]}])["SecurityGroups"]:
            # Refused while an instance that used it is still shutting down.
            cloud.while_refused(
                lambda: self.ec2.delete_security_group(GroupId=group["GroupId"]),
                refused_with("DependencyViolation"),
                INSTANCE_PATIENCE,
                self.waiting,
            )
            self.out(f"{'removed':<12} security group {group['GroupName']}")

    def _remove_queue(self, name):
        try:
            self.sqs.delete_queue(QueueUrl=self.sqs.get_queue_url(QueueName=name)["QueueUrl"])
            self.out(f"{'removed':<12} queue {name} (its name can be used again after 60 s)")
        except self.sqs.exceptions.QueueDoesNotExist:
            pass

    def _terminate(self, names):
        """Terminate our instances named `names` and wait until they are; again, should more appear
        meanwhile (launched by an autoscaler that was still stepping)."""
        for _ in range(TEARDOWN_ROUNDS):
            live = self._ours(names, pool.LIVE_STATES)
            if not live:
                return
            ids = [i["id"] for i in live]
            self.out(f"{'removing':<12} instances {', '.join(sorted(i['name'] + '=' + i['id'] for i in live))}")
            self.ec2.terminate_instances(InstanceIds=ids)
            pool.wait_for(self.ec2, ids, ["terminated"], INSTANCE_PATIENCE)
        raise ProvisionError(
            f"instances named {names} kept appearing after {TEARDOWN_ROUNDS} rounds: is an autoscaler still running somewhere?"
        )

    def _remove_bucket(self, bucket):
        try:
            cloud.empty_bucket(self.s3, bucket)
            self.s3.delete_bucket(Bucket=bucket)
            self.out(f"{'removed':<12} bucket {bucket}")
        except self.s3.exceptions.NoSuchBucket:
            pass

    def _remove_table(self):
        """The results table, waited on until it is gone (made with FR_RESULTS_TABLE=1, whatever it is now)."""
        name = self.config.results_table_name
        table = self._table(name)
        if table is None:
            return
        if table["TableStatus"] != "DELETING":
            # Refused while CREATING or UPDATING.
            cloud.while_refused(
                lambda: self.dynamodb.delete_table(TableName=name),
                refused_with("ResourceInUseException"),
                TABLE_PATIENCE,
                self.waiting,
            )
        self._wait_table(name, None)
        self.out(f"{'removed':<12} DynamoDB table {name}")

    def remaining(self):
        """What of ours is still there and may be billed: [(kind, id)]."""
        left = [("instance", i["id"]) for i in self._ours(["*"], pool.LIVE_STATES)]
        left += [("table", self.config.results_table_name)] if self._table(self.config.results_table_name) else []
        left += self.remaining_log_groups() + self.remaining_alarms()
        left += [
            ("address", a["AllocationId"])
            for a in self.ec2.describe_addresses(
                Filters=[{"Name": f"tag:{settings.PREFIX_TAG}", "Values": [self.config.prefix]}]
            )["Addresses"]
        ]
        left += [
            ("volume", v["VolumeId"])
            for v in self.ec2.describe_volumes(Filters=[{"Name": f"tag:{settings.PREFIX_TAG}", "Values": [self.config.prefix]}])[
                "Volumes"
            ]
        ]
        left += [
            ("image", i["ImageId"])
            for i in self.ec2.describe_images(
                Owners=["self"], Filters=[{"Name": f"tag:{settings.PREFIX_TAG}", "Values": [self.config.prefix]}]
            )["Images"]
        ]
        left += [
            ("snapshot", s["SnapshotId"])
            for s in self.ec2.describe_snapshots(
                OwnerIds=["self"], Filters=[{"Name": f"tag:{settings.PREFIX_TAG}", "Values": [self.config.prefix]}]
            )["Snapshots"]
        ]
        return left
