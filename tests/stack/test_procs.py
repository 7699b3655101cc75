import unittest

from core import settings
from deploy.provision import Provisioner
from scaling import pool
from simulation.procs import KEEP_LINES, Child, ChildFailed
from tests.support import NO_GUESTS, PYTHON, aws, start_moto


class ChildTest(unittest.TestCase):
    def test_output_is_kept_bounded_and_readers_keep_their_place(self):
        total = KEEP_LINES + 500
        child = Child("printer", [PYTHON, "-c", f"for n in range({total}): print(n)"])
        self.addCleanup(child.stop)
        child.popen.wait(30)
        child._reader.join(10)
        self.assertEqual(child.count, total)
        self.assertEqual(len(child.lines), KEEP_LINES)
        seen, new = child.since(total - 3)
        self.assertEqual((seen, new), (total, [str(total - 3), str(total - 2), str(total - 1)]))
        self.assertEqual(child.since(total), (total, []))
        self.assertEqual(len(child.since(0)[1]), KEEP_LINES, "lines no longer kept are skipped")

    def test_waiting_for_a_line_that_never_comes_fails_with_the_tail(self):
        child = Child("quiet", [PYTHON, "-c", "print('hello', flush=True); import signal; signal.pause()"])
        self.addCleanup(child.stop)
        self.assertEqual(child.wait_for(r"hel(lo)", 10)[1], "lo")
        with self.assertRaisesRegex(ChildFailed, "(?s)no 'bye' within 0.3 s:.*hello"):
            child.wait_for("bye", 0.3)


class MotoServerTest(unittest.TestCase):
    def test_motoserver_lists_moto_services_once_with_the_same_answer(self):
        from moto import backends

        listed = list(backends.list_of_moto_modules())
        import simulation.motoserver  # noqa: F401  (the fix is made on import, as when it runs)

        first = backends.list_of_moto_modules()
        self.assertEqual(list(first), listed)
        self.assertIn("sqs", first)
        self.assertIs(backends.list_of_moto_modules(), first, "listed again")

    def test_motoserver_lists_regions_on_one_session_with_the_same_answers(self):
        from unittest import mock

        import boto3.session
        import botocore.loaders
        import botocore.session

        import simulation.motoserver  # noqa: F401  (the fix is made on import, as when it runs)

        asked = [("ec2",), ("ec2", "aws-us-gov"), ("ec2", "aws-cn"), ("sqs", "aws", True)]
        theirs = [botocore.session.Session().get_available_regions(*args) for args in asked]  # what boto3's asks
        read = botocore.loaders.Loader.load_service_model
        with mock.patch.object(botocore.loaders.Loader, "load_service_model", autospec=True, side_effect=read) as loaded:
            ours = [boto3.session.Session().get_available_regions(*args) for args in asked]
            again = [boto3.session.Session().get_available_regions(*args) for args in asked]
        self.assertEqual(ours, theirs)
        self.assertIn("us-east-1", ours[0])
        self.assertEqual(again, ours)
        # Each session of its own would read EC2's model three times and SQS's once, and all four again.
        self.assertLessEqual(loaded.call_count, 2, [call.args[1:] for call in loaded.call_args_list])

    def test_motoserver_serialises_every_response_as_moto_does(self):
        # In-process moto (mock_aws) answers through the same response classes and serialiser.
        from unittest import mock

        import boto3
        from moto import mock_aws
        from moto.core import serialize

        from simulation import motoserver

        def calls(ec2, sqs, s3, iam, dynamodb, queue):
            return [
                ec2.describe_instances(),
                ec2.describe_instance_status(IncludeAllInstances=True),
                ec2.describe_images(Owners=["self"]),
                ec2.describe_volumes(),
                ec2.describe_security_groups(),
                ec2.describe_subnets(),
                ec2.describe_launch_templates(),
                sqs.receive_message(QueueUrl=queue, AttributeNames=["All"], MessageAttributeNames=["All"], VisibilityTimeout=0),
                sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"]),
                s3.list_objects_v2(Bucket="bucket"),
                iam.get_role(RoleName="r"),
                dynamodb.describe_table(TableName="t"),
            ]

        with mock_aws():
            clients = [boto3.client(name, region_name="us-east-1") for name in ("ec2", "sqs", "s3", "iam", "dynamodb")]
            ec2, sqs, s3, iam, dynamodb = clients
            image = ec2.describe_images()["Images"][0]["ImageId"]
            tags = [{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "tagged"}]}]
            launched = ec2.run_instances(ImageId=image, MinCount=2, MaxCount=2, TagSpecifications=tags)
            ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)  # no tags: moto leaves Tags out
            ec2.stop_instances(InstanceIds=[launched["Instances"][0]["InstanceId"]])
            ec2.create_image(InstanceId=launched["Instances"][1]["InstanceId"], Name="app")
            ec2.create_launch_template(LaunchTemplateName="lt", LaunchTemplateData={"ImageId": image})
            queue = sqs.create_queue(QueueName="q")["QueueUrl"]
            sqs.send_message(QueueUrl=queue, MessageBody="m", MessageAttributes={"a": {"DataType": "String", "StringValue": "v"}})
            s3.create_bucket(Bucket="bucket")
            s3.put_object(Bucket="bucket", Key="k", Body=b"x")
            iam.create_role(RoleName="r", AssumeRolePolicyDocument="{}", Tags=[{"Key": "k", "Value": "v"}])
            key = [{"AttributeName": "s", "KeyType": "HASH"}]
            attributes = [{"AttributeName": "s", "AttributeType": "S"}]
            dynamodb.create_table(TableName="t", KeySchema=key, AttributeDefinitions=attributes, BillingMode="PAY_PER_REQUEST")
            # RunInstances' State comes from moto's response transformer (pending), not the instance.
            self.assertEqual(launched["Instances"][0]["State"]["Name"], "pending")
            ours = calls(*clients, queue) + calls(*clients, queue)  # the second from what was remembered
            with mock.patch.object(serialize.ResponseSerializer, "get_value", motoserver.moto_get_value):
                theirs = calls(*clients, queue)
        for got, expected in zip(ours[len(theirs) :], theirs, strict=True):
            for answer in (got, expected):
                answer.pop("ResponseMetadata")
                for message in answer.get("Messages", []):
                    for volatile in ("ReceiptHandle", "Attributes"):
                        message.pop(volatile)
            self.assertEqual(got, expected)

    def test_plain_moto_as_local_mode_runs_it_takes_the_whole_provisioning(self):
        # `./setup.sh local` without FR_SIMULATE=aws: moto as it is, but for motoserver's fixes
        # (provisioning asks for the default EBS key, which moto 5.2 does not answer).
        endpoint = start_moto(self, name="moto-plain", FR_SIMULATE="")
        config = settings.load_config({"FR_PREFIX": "plain", "FR_ENDPOINT_URL": endpoint, "FR_AMI_ID": "ami-0app", **NO_GUESTS})
        said = []
        Provisioner(config, lambda name: aws(endpoint, name), out=said.append).provision()
        self.assertEqual(len(pool.describe(aws(endpoint, "ec2"), config)), config.pool_size, said)


if __name__ == "__main__":
    unittest.main()
