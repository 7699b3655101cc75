"""The AWS-like local stack (tools/awslike.py) behaves as AWS does where moto does not."""
import time
import unittest

import pool
from tests.support import TIME_SCALE, aws, refusals, start_moto, wait_until
from tools import awslike

SECONDS = awslike.timings(TIME_SCALE)
IMAGE = "ami-12345678"


class AwsLikeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        endpoint = start_moto(cls)
        cls.ec2, cls.iam, cls.sqs = (aws(endpoint, name) for name in ("ec2", "iam", "sqs"))

    def state(self, instance):
        return pool.instance_states(self.ec2, [instance])[instance]

    def launch(self, **arguments):
        return self.ec2.run_instances(ImageId=IMAGE, MinCount=1, MaxCount=1, **arguments)["Instances"][0]["InstanceId"]

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
        self.assertEqual([(e["action"], e["refused"]) for e in refused[-2:]],
                         [("StopInstances", f"{pending} is pending"), ("StartInstances", f"{ready} is stopping")])

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
        self.ec2.stop_instances(InstanceIds=[sleeper], Hibernate=True)
        self.ec2.stop_instances(InstanceIds=[plain])
        wait_until(lambda: {self.state(plain), self.state(sleeper)} == {"stopped"}, 10, what="stopped")
        reasons = {i["InstanceId"]: i["StateReason"]["Code"] for r in self.ec2.describe_instances(
            InstanceIds=[plain, sleeper])["Reservations"] for i in r["Instances"]}
        self.assertEqual(reasons, {plain: "Client.UserInitiatedShutdown", sleeper: "Client.UserInitiatedHibernate"})

    def test_a_new_instance_profile_is_refused_until_iam_has_propagated_it(self):
        self.iam.create_role(RoleName="fresh", AssumeRolePolicyDocument="{}")
        self.iam.create_instance_profile(InstanceProfileName="fresh")
        self.iam.add_role_to_instance_profile(InstanceProfileName="fresh", RoleName="fresh")
        created = time.monotonic()
        with self.assertRaisesRegex(Exception, "Invalid IAM Instance Profile name"):
            self.launch(IamInstanceProfile={"Name": "fresh"})
        instance = pool.run_instance(self.ec2, patience=10, ImageId=IMAGE, IamInstanceProfile={"Name": "fresh"})
        self.assertGreaterEqual(time.monotonic() - created, SECONDS["profile_propagation"])
        self.assertTrue(instance.startswith("i-"))

    def test_sqs_counts_trail_the_truth(self):
        url = self.sqs.create_queue(QueueName="lagging")["QueueUrl"]
        self.sqs.send_message(QueueUrl=url, MessageBody="work")
        sent = time.monotonic()

        def visible():
            return self.sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"]

        self.assertEqual(visible(), "0")
        wait_until(lambda: visible() == "1", 10, what="the count to show the message")
        self.assertGreaterEqual(time.monotonic() - sent, SECONDS["sqs_count_lag"] - 0.2)

    def test_a_message_can_be_hidden_for_12_hours_from_its_receive_not_from_its_send(self):
        url = self.sqs.create_queue(QueueName="hidden")["QueueUrl"]
        # Sent now, received 2 s later: moto alone counts the 12 hours from the send.
        self.sqs.send_message(QueueUrl=url, MessageBody="kept", DelaySeconds=2)
        (message,) = wait_until(lambda: self.sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5).get("Messages"), 10,
                                what="the delayed message")
        handle = message["ReceiptHandle"]
        self.sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=43200 - 1)
        with self.assertRaisesRegex(Exception, "InvalidParameterValue"):
            self.sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=43200)

    def test_a_deleted_queue_name_is_refused_for_a_while(self):
        url = self.sqs.create_queue(QueueName="reused")["QueueUrl"]
        self.sqs.delete_queue(QueueUrl=url)
        with self.assertRaises(self.sqs.exceptions.QueueDeletedRecently):
            self.sqs.create_queue(QueueName="reused")

    def test_a_security_group_is_in_use_until_its_instances_are_terminated(self):
        group = self.ec2.create_security_group(GroupName="busy", Description="test")["GroupId"]
        instance = self.launch(SecurityGroupIds=[group])
        self.ec2.terminate_instances(InstanceIds=[instance])
        with self.assertRaisesRegex(Exception, "DependencyViolation"):
            self.ec2.delete_security_group(GroupId=group)
        wait_until(lambda: self.state(instance) == "terminated", 10, what="terminated")
        self.ec2.delete_security_group(GroupId=group)


if __name__ == "__main__":
    unittest.main()
