"""The AWS-like local stack (simulation/awslike/) behaves as AWS does where moto does not."""

import json
import time
import unittest

import boto3
from botocore.exceptions import ClientError

from core import cloud, settings
from scaling import launching, pool
from simulation import awsiam, awslike
from tests.support import aws, denials, new_queue, refusals, start_moto, wait_until

# Twice the other tests' scale: the windows these tests look into (pending 0.7 s, a table CREATING
# 1 s) outlast a call on a loaded machine; at 0.05 they were missed now and then.
TIME_SCALE = 0.1
SECONDS = awslike.timings(TIME_SCALE)
IMAGE = "ami-12345678"


class AwsLikeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.endpoint = start_moto(cls, FR_SIMULATE_TIME_SCALE=TIME_SCALE)
        cls.ec2, cls.iam, cls.sqs = (aws(cls.endpoint, name) for name in ("ec2", "iam", "sqs"))

    def state(self, instance):
        """The instance's state, or None while EC2 does not know it yet (eventual consistency)."""
        try:
            return pool.instance_states(self.ec2, [instance])[instance]
        except self.ec2.exceptions.ClientError as e:
            self.assertEqual(cloud.error_code(e), "InvalidInstanceID.NotFound")
            return None

    def launch(self, **arguments):
        """A new instance, once describe calls show it (pending)."""
        instance = self.ec2.run_instances(ImageId=IMAGE, MinCount=1, MaxCount=1, **arguments)["Instances"][0]["InstanceId"]
        wait_until(lambda: self.state(instance), 10, what="the new instance visible")
        return instance

    def running(self):
        instance = self.launch()
        wait_until(lambda: self.state(instance) == "running", 10, what="running")
        return instance

    def test_instances_pass_through_pending_stopping_and_shutting_down(self):
        instance = self.launch()
        self.assertEqual(self.state(instance), "pending")
        wait_until(lambda: self.state(instance) == "running", 10, what="running")
        self.ec2.stop_instances(InstanceIds=[instance])
        self.assertEqual(self.state(instance), "stopping")
        wait_until(lambda: self.state(instance) == "stopped", 10, what="stopped")
        self.ec2.terminate_instances(InstanceIds=[instance])
        self.assertEqual(self.state(instance), "shutting-down")
        wait_until(lambda: self.state(instance) == "terminated", 10, what="terminated")

    def test_ec2_refuses_the_whole_call_for_one_instance_in_a_state_it_refuses(self):
        ready, pending = self.running(), self.launch()
        with self.assertRaisesRegex(Exception, f"IncorrectInstanceState.*{pending}.*stopped"):
            self.ec2.stop_instances(InstanceIds=[ready, pending])
        self.assertEqual(self.state(ready), "running", "nothing of a refused call is done")
        self.ec2.stop_instances(InstanceIds=[ready])
        with self.assertRaisesRegex(Exception, f"IncorrectInstanceState.*{ready}.*started"):
            self.ec2.start_instances(InstanceIds=[ready])
        refused = refusals(self.moto_state)
        self.assertEqual(
            [(e["action"], e["refused"]) for e in refused[-2:]],
            [("StopInstances", f"{pending} is pending"), ("StartInstances", f"{ready} is stopping")],
        )

    def test_starting_a_running_instance_and_stopping_a_stopped_one_change_nothing(self):
        instance = self.running()
        self.ec2.start_instances(InstanceIds=[instance])
        self.assertEqual(self.state(instance), "running")
        self.ec2.stop_instances(InstanceIds=[instance])
        wait_until(lambda: self.state(instance) == "stopped", 10, what="stopped")
        self.ec2.stop_instances(InstanceIds=[instance])
        self.assertEqual(self.state(instance), "stopped")

    def test_only_an_instance_launched_for_hibernation_hibernates(self):
        plain, sleeper = self.running(), self.launch(HibernationOptions={"Configured": True})
        wait_until(lambda: self.state(sleeper) == "running", 10, what="running")
        with self.assertRaisesRegex(Exception, "UnsupportedHibernationConfiguration"):
            self.ec2.stop_instances(InstanceIds=[plain, sleeper], Hibernate=True)
        self.assertEqual({self.state(plain), self.state(sleeper)}, {"running"}, "refused whole")

    def test_the_guest_hibernates_once_set_up_and_not_right_after_a_resume(self):
        early, later = (self.launch(HibernationOptions={"Configured": True}) for _ in range(2))
        launched = time.monotonic()
        wait_until(lambda: {self.state(early), self.state(later)} == {"running"}, 10, what="running")
        self.ec2.stop_instances(InstanceIds=[early], Hibernate=True)
        self.assertIn("swap file", self.dropped(early))
        # EC2 leaves it stopping, unstartable, until it forces it off: far past a stop's time.
        stopping_until = time.monotonic() + SECONDS["stopping"] * 2
        wait_until(lambda: time.monotonic() > stopping_until, 10, what="twice a stop's time")
        self.assertEqual(self.state(early), "stopping")

        wait_until(lambda: time.monotonic() - launched > SECONDS["agent_setup"], 10, what="the agent set up")
        self.ec2.stop_instances(InstanceIds=[later], Hibernate=True)
        wait_until(lambda: self.state(later) == "stopped", 10, what="stopped")
        (described,) = self.ec2.describe_instances(InstanceIds=[later])["Reservations"][0]["Instances"]
        self.assertEqual(described["StateReason"]["Code"], "Client.UserInitiatedHibernate")
        # Resumed: the agent ignores the sleep button for its first 30 s.
        self.ec2.start_instances(InstanceIds=[later])
        wait_until(lambda: self.state(later) == "running", 10, what="running")
        self.ec2.stop_instances(InstanceIds=[later], Hibernate=True)
        self.assertIn("resumed", self.dropped(later))

    def test_a_booting_guest_drops_the_sleep_button_and_only_its_first_boot_reads_the_volume_from_s3(self):
        instance = self.launch(HibernationOptions={"Configured": True})
        launched = time.monotonic()
        wait_until(lambda: self.state(instance) == "running", 10, what="running")
        wait_until(
            lambda: time.monotonic() - launched > SECONDS["agent_setup"], SECONDS["agent_setup"] + 10, what="the agent set up"
        )
        self.ec2.stop_instances(InstanceIds=[instance])  # plainly: the next start boots
        wait_until(lambda: self.state(instance) == "stopped", 10, what="stopped")
        self.ec2.start_instances(InstanceIds=[instance])
        wait_until(lambda: self.state(instance) == "running", 10, what="running")
        # Running, but its OS and then the agent's boot work (swap offset, dracut) take a while yet.
        self.ec2.stop_instances(InstanceIds=[instance], Hibernate=True)
        self.assertIn("booting", self.dropped(instance))
        boots = [
            e["boot"]
            for e in awslike.read_journal(self.moto_state)
            if e["action"] == "GuestBoot" and e["instances"] == [instance]
        ]
        first_read = SECONDS["volume_first_read"]
        self.assertEqual(boots, [round(SECONDS["boot"] + first_read, 3), round(SECONDS["boot"], 3)], "the first boot only")

    def dropped(self, instance):
        """Why the guest dropped the hibernation of `instance` (the journal's one entry for it)."""
        (entry,) = [
            e
            for e in awslike.read_journal(self.moto_state)
            if e["action"] == "HibernationDropped" and e["instances"] == [instance]
        ]
        return entry["reason"]

    def test_ec2_starts_its_launch_time_again_at_each_start_and_keeps_the_launch_on_the_interface(self):
        instance = self.running()
        first = self.describe(instance)
        self.ec2.stop_instances(InstanceIds=[instance])
        wait_until(lambda: self.state(instance) == "stopped", 10, what="stopped")
        wait_until(lambda: time.time() - first["LaunchTime"].timestamp() > 1, 10, what="a second later")
        self.ec2.start_instances(InstanceIds=[instance])
        again = self.describe(instance)
        self.assertGreater(again["LaunchTime"], first["LaunchTime"])
        attached = [n["Attachment"]["AttachTime"] for n in (first, again) for n in n["NetworkInterfaces"]]
        self.assertEqual(attached[0], attached[1])

    def describe(self, instance):
        return self.ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]

    def test_a_client_token_of_terminated_instances_launches_nothing(self):
        launch = dict(ImageId=IMAGE, MinCount=1, MaxCount=1, ClientToken="gone")
        instance = self.ec2.run_instances(**launch)["Instances"][0]["InstanceId"]
        wait_until(lambda: self.state(instance), 10, what="the new instance visible")
        self.ec2.terminate_instances(InstanceIds=[instance])
        wait_until(lambda: self.state(instance) == "terminated", 10, what="terminated")
        with self.assertRaisesRegex(Exception, "IdempotentInstanceTerminated"):
            self.ec2.run_instances(**launch)

    def test_a_new_instance_profile_is_refused_until_iam_has_propagated_it(self):
        self.iam.create_role(RoleName="fresh", AssumeRolePolicyDocument="{}")
        self.iam.create_instance_profile(InstanceProfileName="fresh")
        self.iam.add_role_to_instance_profile(InstanceProfileName="fresh", RoleName="fresh")
        created = time.monotonic()
        with self.assertRaisesRegex(Exception, "Invalid IAM Instance Profile name"):
            self.launch(IamInstanceProfile={"Name": "fresh"})
        instance = launching.run_instance(self.ec2, patience=10, ImageId=IMAGE, IamInstanceProfile={"Name": "fresh"})
        self.assertGreaterEqual(time.monotonic() - created, SECONDS["profile_propagation"])
        self.assertTrue(instance.startswith("i-"))

    def test_sqs_counts_trail_the_truth(self):
        url = new_queue(self.sqs, "lagging")
        self.sqs.send_message(QueueUrl=url, MessageBody="work")
        sent = time.monotonic()

        def visible():
            return self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"][
                "ApproximateNumberOfMessages"
            ]

        self.assertEqual(visible(), "0")
        wait_until(lambda: visible() == "1", 10, what="the count to show the message")
        self.assertGreaterEqual(time.monotonic() - sent, SECONDS["sqs_count_lag"] - 0.2)

    def test_a_messages_attributes_count_toward_the_queues_size_limit(self):
        url = new_queue(self.sqs, "small", Attributes={"MaximumMessageSize": "1024"})
        attribute = {"deadline": {"DataType": "Number", "StringValue": "1800000000000"}}  # 27 bytes
        self.sqs.send_message(QueueUrl=url, MessageBody="é" * 500 + "x" * 24)  # 1,024 bytes
        for body, attributes in (("é" * 500 + "x" * 25, {}), ("x" * 1000, attribute)):  # 1,025 bytes (525 characters); 1,027
            with self.assertRaisesRegex(Exception, "InvalidParameterValue.*shorter than 1024"):
                self.sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attributes)
        self.sqs.send_message(QueueUrl=url, MessageBody="x" * 997, MessageAttributes=attribute)

    def test_a_message_can_be_hidden_for_12_hours_from_its_receive_not_from_its_send(self):
        url = new_queue(self.sqs, "hidden")
        # Sent now, received 2 s later: moto alone counts the 12 hours from the send.
        self.sqs.send_message(QueueUrl=url, MessageBody="kept", DelaySeconds=2)
        (message,) = wait_until(
            lambda: self.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5).get("Messages"), 10, what="the delayed message"
        )
        handle = message["ReceiptHandle"]
        self.sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=43200 - 1)
        with self.assertRaisesRegex(Exception, "InvalidParameterValue"):
            self.sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=43200)

    def test_a_deleted_queue_name_is_refused_for_a_while(self):
        url = new_queue(self.sqs, "reused")
        self.sqs.delete_queue(QueueUrl=url)
        with self.assertRaises(self.sqs.exceptions.QueueDeletedRecently):
            self.sqs.create_queue(QueueName="reused")

    def test_a_new_queue_is_unusable_for_its_first_second_even_as_a_dead_letter_target(self):
        # On a moto of its own where the first second lasts 5 (a loaded machine's calls come well
        # within it), its SQS loaded first (moto loads a service at its first call).
        sqs = aws(start_moto(self, name="moto-young-queues", FR_SIMULATE_TIME_SCALE=5), "sqs")
        sqs.list_queues()
        url = sqs.create_queue(QueueName="young")["QueueUrl"]
        self.assertEqual(sqs.get_queue_url(QueueName="young")["QueueUrl"], url)
        with self.assertRaises(ClientError) as refused:
            sqs.send_message(QueueUrl=url, MessageBody="too soon")
        self.assertEqual(refused.exception.response["Error"]["Code"], "AWS.SimpleQueueService.NonExistentQueue")
        redrive = json.dumps({"deadLetterTargetArn": "arn:aws:sqs:us-east-1:123456789012:young", "maxReceiveCount": "3"})
        with self.assertRaises(ClientError) as refused:
            sqs.create_queue(QueueName="main", Attributes={"RedrivePolicy": redrive})
        self.assertEqual(refused.exception.response["Error"]["Code"], "InvalidParameterValue")
        wait_until(lambda: self.usable(sqs, url), 15, what="the queue usable")
        sqs.send_message(QueueUrl=url, MessageBody="in time")
        sqs.create_queue(QueueName="main", Attributes={"RedrivePolicy": redrive})
        # A refused RedrivePolicy changes nothing.
        sqs.create_queue(QueueName="late")
        late = json.dumps({"deadLetterTargetArn": "arn:aws:sqs:us-east-1:123456789012:late", "maxReceiveCount": "3"})
        with self.assertRaises(ClientError) as refused:
            sqs.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": late})
        self.assertEqual(refused.exception.response["Error"]["Code"], "InvalidParameterValue")
        self.assertNotIn("RedrivePolicy", sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"])

    @staticmethod
    def usable(sqs, url):
        try:
            sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            return True
        except ClientError:
            return False

    def test_a_table_is_creating_then_active_and_deleting_then_gone(self):
        # A moto of its own, where each of the two lasts 3 s: the calls in between are made in far less.
        dynamodb = aws(start_moto(self, name="moto-tables", FR_SIMULATE_TIME_SCALE=0.3), "dynamodb")
        item = {"stem": {"S": "x"}}

        def status():
            try:
                return dynamodb.describe_table(TableName="t")["Table"]["TableStatus"]
            except dynamodb.exceptions.ResourceNotFoundException:
                return None

        dynamodb.create_table(
            TableName="t",
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "stem", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "stem", "AttributeType": "S"}],
        )
        self.assertEqual(status(), "CREATING")
        with self.assertRaises(dynamodb.exceptions.ResourceNotFoundException):
            dynamodb.put_item(TableName="t", Item=item)
        with self.assertRaises(dynamodb.exceptions.ResourceInUseException):
            dynamodb.delete_table(TableName="t")
        wait_until(lambda: status() == "ACTIVE", 10, what="ACTIVE")
        dynamodb.put_item(TableName="t", Item=item)
        self.assertEqual(dynamodb.delete_table(TableName="t")["TableDescription"]["TableStatus"], "DELETING")
        dynamodb.delete_table(TableName="t")  # already DELETING: accepted
        with self.assertRaises(dynamodb.exceptions.ResourceInUseException):
            dynamodb.create_table(
                TableName="t",
                BillingMode="PAY_PER_REQUEST",
                KeySchema=[{"AttributeName": "stem", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "stem", "AttributeType": "S"}],
            )
        wait_until(lambda: status() is None, 10, what="gone")

    def test_delete_objects_is_authorized_for_each_key_it_names(self):
        # A role may delete under one prefix only: deleting there passes, naming one key elsewhere is
        # denied on that key (not on the bucket's keys as a whole).
        s3 = aws(self.endpoint, "s3")
        s3.create_bucket(Bucket="keys-bucket")
        for key in ("mine/1", "mine/2", "theirs/1"):
            s3.put_object(Bucket="keys-bucket", Key=key, Body=b"x")
        trust = {"Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
        self.iam.create_role(RoleName="keys-role", AssumeRolePolicyDocument=json.dumps(trust))
        allowed = {"Effect": "Allow", "Action": "s3:DeleteObject", "Resource": "arn:aws:s3:::keys-bucket/mine/*"}
        self.iam.put_role_policy(
            RoleName="keys-role",
            PolicyName="keys-role",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [allowed]}),
        )
        role = boto3.client(
            "s3",
            region_name="us-east-1",
            endpoint_url=self.endpoint,
            **{k.lower(): v for k, v in awsiam.credentials("keys-role").items()},
        )
        role.delete_objects(Bucket="keys-bucket", Delete={"Objects": [{"Key": "mine/1"}, {"Key": "mine/2"}]})
        with self.assertRaisesRegex(ClientError, "AccessDenied"):
            role.delete_objects(Bucket="keys-bucket", Delete={"Objects": [{"Key": "theirs/1"}]})
        self.assertEqual(denials(self.moto_state)[-1]["resource"], "arn:aws:s3:::keys-bucket/theirs/1")
        self.assertEqual([o["Key"] for o in s3.list_objects_v2(Bucket="keys-bucket")["Contents"]], ["theirs/1"])

    def test_a_security_group_is_in_use_until_its_instances_are_terminated(self):
        group = self.ec2.create_security_group(GroupName="busy", Description="test")["GroupId"]
        instance = self.launch(SecurityGroupIds=[group])
        self.ec2.terminate_instances(InstanceIds=[instance])
        with self.assertRaisesRegex(Exception, "DependencyViolation"):
            self.ec2.delete_security_group(GroupId=group)
        wait_until(lambda: self.state(instance) == "terminated", 10, what="terminated")
        self.ec2.delete_security_group(GroupId=group)


class EventualConsistencyTest(unittest.TestCase):
    """Closer to AWS's timings (a new instance unknown to describe calls for 0.6 s), so that the
    moment after RunInstances is long enough to act in."""

    @classmethod
    def setUpClass(cls):
        endpoint = start_moto(cls, FR_SIMULATE_TIME_SCALE=0.3)
        cls.ec2, iam = aws(endpoint, "ec2"), aws(endpoint, "iam")
        cls.config = settings.load_config(
            {
                "FR_PREFIX": "lag",
                "FR_ENDPOINT_URL": endpoint,
                "FR_AMI_ID": IMAGE,
                "FR_MAX_INSTANCES": "3",
                "FR_SPARE_INSTANCES": "2",
                "FR_HIBERNATE": "0",
            }
        )
        iam.create_role(RoleName=cls.config.role("app"), AssumeRolePolicyDocument="{}")
        iam.create_instance_profile(InstanceProfileName=cls.config.role("app"))
        iam.add_role_to_instance_profile(InstanceProfileName=cls.config.role("app"), RoleName=cls.config.role("app"))
        cls.ec2.create_security_group(GroupName=launching.app_security_group_name(cls.config), Description="members")

    def test_a_new_instance_is_unknown_for_a_moment_and_its_client_token_launches_it_once(self):
        launch = dict(ImageId=IMAGE, MinCount=1, MaxCount=1, ClientToken="once")
        instance = self.ec2.run_instances(**launch)["Instances"][0]["InstanceId"]
        with self.assertRaisesRegex(Exception, "InvalidInstanceID.NotFound"):
            self.ec2.describe_instances(InstanceIds=[instance])
        self.assertNotIn(instance, pool.instance_states(self.ec2))
        self.assertEqual(self.ec2.run_instances(**launch)["Instances"][0]["InstanceId"], instance)

    def test_the_snapshot_of_a_deregistered_image_is_in_use_for_a_while_then_it_can_be_deleted(self):
        # snapshot_release: 1.5 s at this scale (at the tests' usual 0.05, too short to see reliably).
        instance = self.ec2.run_instances(ImageId=IMAGE, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        wait_until(lambda: instance in pool.instance_states(self.ec2), 10, what="the instance known")
        image = self.ec2.create_image(InstanceId=instance, Name="released-later")["ImageId"]
        (snapshot,) = [
            m["Ebs"]["SnapshotId"] for m in self.ec2.describe_images(ImageIds=[image])["Images"][0]["BlockDeviceMappings"]
        ]
        self.ec2.deregister_image(ImageId=image)
        with self.assertRaisesRegex(Exception, "InvalidSnapshot.InUse"):
            self.ec2.delete_snapshot(SnapshotId=snapshot)

        def deleted():
            try:
                self.ec2.delete_snapshot(SnapshotId=snapshot)
            except Exception as e:
                self.assertIn("InvalidSnapshot.InUse", str(e))
                return False
            return True

        wait_until(deleted, 10, interval=0.2, what="the snapshot deleted once released")

    def test_pool_repair_launches_each_missing_member_once_while_describe_lags(self):
        launches = launching.Launches()
        # patience: IAM propagating the new instance profile first.
        first = launching.repair(self.ec2, self.config, pool.describe(self.ec2, self.config), patience=10, launches=launches)
        self.assertEqual(pool.describe(self.ec2, self.config), [], "the new members are not visible yet")
        again = launching.repair(self.ec2, self.config, [], launches=launches)
        self.assertEqual(again, first, "launched again: EC2 answers with the same instances")
        self.assertEqual(sorted(first), [pool.instance_name(n) for n in (1, 2, 3)], "at most FR_MAX_INSTANCES at once")
        made = [
            e
            for e in awslike.read_journal(self.moto_state)
            if e["action"] == "RunInstances" and e["instances"] and set(e["instances"]) <= set(first.values())
        ]
        self.assertEqual([e.get("idempotent", False) for e in made], [False] * 3 + [True] * 3)


if __name__ == "__main__":
    unittest.main()
