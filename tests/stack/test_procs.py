import os
import signal
import socket
import tempfile
import unittest
from urllib.parse import urlsplit

from core import settings
from deploy.iam import SSM_POLICY
from deploy.provision import Provisioner
from scaling import pool
from simulation import motofork
from simulation.localstack import MOTO_SERVER
from simulation.procs import KEEP_LINES, Child, ChildFailed, children_by_parent
from tests.support import NO_GUESTS, PYTHON, aws, child_env, start_moto, state_dir, wait_until


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


def refused(url):
    """Whether nothing listens at `url` any more."""
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


class MotoForkTest(unittest.TestCase):
    """simulation/motofork.py: moto servers forked from one that has imported moto."""

    @classmethod
    def setUpClass(cls):
        folder = tempfile.TemporaryDirectory(prefix="motofork-test-")
        cls.addClassCleanup(folder.cleanup)
        cls.socket = os.path.join(folder.name, "socket")
        cls.server = Child("motofork-test", [PYTHON, "-m", "simulation.motofork", "serve", cls.socket], cwd=settings.PROJECT_DIR)
        cls.addClassCleanup(cls.server.stop)
        cls.server.wait_for(motofork.READY, 60)

    def start(self, name, socket_path=None):
        """A moto started as the tests start one, with MOTO_FORK_SOCKET `socket_path` (the class's
        fork server by default): (its Child, its endpoint URL)."""
        env = child_env(FR_STATE_DIR=state_dir(name), **{motofork.ENVIRONMENT: socket_path or self.socket})
        moto = Child(name, [*MOTO_SERVER, "-H", "127.0.0.1", "-p", "0"], env, cwd=settings.PROJECT_DIR)
        self.addCleanup(moto.stop)
        return moto, moto.wait_for(r"Running on (http://127\.0\.0\.1:\d+)", 60)[1]

    def forked(self):
        return set(children_by_parent().get(self.server.pid, []))

    def test_each_start_is_a_fresh_moto_of_its_own_forked_and_ended_with_its_stand_in(self):
        before = self.forked()
        (first, first_url), (second, second_url) = self.start("fork-a"), self.start("fork-b")
        servers = self.forked() - before
        self.assertEqual(len(servers), 2, "not forked by the fork server")
        self.assertNotIn(first.pid, servers)
        launched = []
        for url in (first_url, second_url):
            ec2, sqs = aws(url, "ec2"), aws(url, "sqs")
            self.assertEqual(sqs.list_queues().get("QueueUrls", []), [], "not a fresh moto")
            aws(url, "iam").get_policy(PolicyArn=SSM_POLICY)  # AWS's managed policies, as provisioning needs
            sqs.create_queue(QueueName="mine")
            image = ec2.describe_images()["Images"][0]["ImageId"]
            launched.append(ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"])
        self.assertNotEqual(launched[0], launched[1], "the same random stream in two servers")
        self.assertEqual(first.stop(), 0)
        self.assertTrue(refused(first_url), "the server outlived its stand-in's stop")
        self.assertEqual(aws(second_url, "sqs").list_queues()["QueueUrls"][0].rsplit("/", 1)[1], "mine")
        self.assertEqual(second.stop(), 0)
        wait_until(lambda: not self.forked() & servers, 10, what="both servers reaped")

    def test_a_server_whose_stand_in_is_killed_ends_too(self):
        moto, url = self.start("fork-killed")
        os.kill(moto.pid, signal.SIGKILL)
        wait_until(lambda: refused(url), 10, what="the server ended")

    def test_with_no_fork_server_the_command_runs_moto_itself(self):
        moto, url = self.start("fork-none", socket_path=os.path.join(os.path.dirname(self.socket), "nobody"))
        self.assertEqual(aws(url, "sqs").list_queues().get("QueueUrls", []), [])
        self.assertNotIn(moto.pid, self.forked())
        moto.stop()
        self.assertTrue(refused(url))


if __name__ == "__main__":
    unittest.main()
