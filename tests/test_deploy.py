"""Deployment: provisioning against moto, dry runs of every setup.sh role, shellcheck, systemd units."""
import json
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

import common
from tests.support import PYTHON, aws, child_env, start_moto

PREFIX = "deploy"
CIDR = "203.0.113.0/24"
ALL_STATES = ["pending", "running", "stopping", "stopped"]


def policy(iam, role):
    document = iam.get_role_policy(RoleName=role, PolicyName=role)["PolicyDocument"]
    return json.loads(document) if isinstance(document, str) else document


def statements(iam, role):
    """{action: sorted resources it is allowed on, over all statements}."""
    allowed = {}
    for statement in policy(iam, role)["Statement"]:
        for action in statement["Action"]:
            allowed.setdefault(action, set()).update(statement["Resource"])
    return {action: sorted(resources) for action, resources in allowed.items()}


class ProvisionTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.endpoint = start_moto(cls)
        cls.env = child_env(FR_PREFIX=PREFIX, FR_ENDPOINT_URL=cls.endpoint, FR_AMI_ID="ami-0app", FR_WEB_CIDR=CIDR)
        cls.config = common.load_config({"FR_PREFIX": PREFIX})
        cls.clients = {name: aws(cls.endpoint, name) for name in ("s3", "sqs", "ec2", "iam")}

    def setup_sh(self, *args):
        done = subprocess.run(["./setup.sh", *args], cwd=common.PROJECT_DIR, env=self.env,
                              capture_output=True, text=True, timeout=300)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        return done.stdout

    def instances(self, name="*", states=ALL_STATES):
        reservations = self.clients["ec2"].describe_instances(Filters=[
            {"Name": "tag:fr-prefix", "Values": [PREFIX]}, {"Name": "tag:Name", "Values": [name]},
            {"Name": "instance-state-name", "Values": states}])["Reservations"]
        return [i for r in reservations for i in r["Instances"]]

    def test_provision_creates_everything_right_a_second_run_nothing_and_teardown_removes_it(self):
        first = self.setup_sh("provision", "--with-web")
        self.assertIn("created", first)
        self.check_queues()
        self.check_buckets()
        self.check_pool_and_web_host()
        self.check_policies()

        second = self.setup_sh("provision", "--with-web")
        self.assertNotIn("created", second)
        self.assertEqual(len(self.instances()), 16)

        self.setup_sh("teardown")
        self.assertEqual(self.instances(), [])
        self.assertEqual(self.clients["sqs"].list_queues(QueueNamePrefix=PREFIX).get("QueueUrls", []), [])
        buckets = [b["Name"] for b in self.clients["s3"].list_buckets()["Buckets"]]
        self.assertFalse([b for b in buckets if b.startswith(PREFIX)], buckets)
        roles = [r["RoleName"] for r in self.clients["iam"].list_roles()["Roles"]]
        self.assertFalse([r for r in roles if r.startswith(PREFIX)], roles)
        self.assertEqual(self.clients["ec2"].describe_addresses()["Addresses"], [])
        groups = self.clients["ec2"].describe_security_groups(Filters=[{"Name": "group-name", "Values": [f"{PREFIX}-web"]}])
        self.assertEqual(groups["SecurityGroups"], [])

    def check_queues(self):
        sqs = self.clients["sqs"]
        request, reply = common.queue_urls(sqs, self.config)
        attributes = sqs.get_queue_attributes(QueueUrl=request, AttributeNames=["All"])["Attributes"]
        dlq = sqs.get_queue_url(QueueName=self.config.dead_letter_queue)["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.assertEqual(attributes["MaximumMessageSize"], "1024")
        self.assertEqual(json.loads(attributes["RedrivePolicy"]), {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3})
        reply_size = sqs.get_queue_attributes(QueueUrl=reply, AttributeNames=["MaximumMessageSize"])["Attributes"]
        self.assertEqual(reply_size["MaximumMessageSize"], "1024")

    def check_buckets(self):
        s3 = self.clients["s3"]
        for bucket in (self.config.in_bucket, self.config.out_bucket, self.config.deploy_bucket):
            block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
            self.assertTrue(all(block.values()) and len(block) == 4, block)
            rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
            self.assertEqual(rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"], "AES256")

    def check_pool_and_web_host(self):
        pool = self.instances("app-tier-instance-*")
        names = sorted(next(t["Value"] for t in i["Tags"] if t["Key"] == "Name") for i in pool)
        self.assertEqual(names, sorted(f"app-tier-instance-{n}" for n in range(1, 16)))
        self.assertEqual({i["State"]["Name"] for i in pool}, {"stopped"})
        self.assertEqual({i["ImageId"] for i in pool}, {"ami-0app"})
        web = self.instances("web-instance", ["running"])
        self.assertEqual(len(web), 1)
        addresses = self.clients["ec2"].describe_addresses()["Addresses"]
        self.assertEqual([a["InstanceId"] for a in addresses], [web[0]["InstanceId"]])
        group = self.clients["ec2"].describe_security_groups(GroupIds=[web[0]["SecurityGroups"][0]["GroupId"]])
        rules = group["SecurityGroups"][0]["IpPermissions"]
        self.assertEqual([(r["FromPort"], r["ToPort"], [x["CidrIp"] for x in r["IpRanges"]]) for r in rules],
                         [(8000, 8000, [CIDR])])

    def check_policies(self):
        account, region, c = "123456789012", "us-east-1", self.config
        req = f"arn:aws:sqs:{region}:{account}:{c.req_queue}"
        resp = f"arn:aws:sqs:{region}:{account}:{c.resp_queue}"
        app = statements(self.clients["iam"], c.role("app"))
        self.assertEqual(app, {
            "s3:GetObject": [f"arn:aws:s3:::{c.in_bucket}/*"],
            "s3:PutObject": [f"arn:aws:s3:::{c.out_bucket}/*"],
            "sqs:ReceiveMessage": [req], "sqs:DeleteMessage": [req], "sqs:ChangeMessageVisibility": [req],
            "sqs:GetQueueUrl": [req, resp],
            "sqs:SendMessage": [resp],
        })
        web = statements(self.clients["iam"], c.role("web"))
        self.assertEqual(web["s3:PutObject"], [f"arn:aws:s3:::{c.in_bucket}/*", f"arn:aws:s3:::{c.out_bucket}/*"])
        self.assertEqual(web["s3:GetObject"], [f"arn:aws:s3:::{c.deploy_bucket}/face-rec.tar.gz"])
        self.assertEqual(web["sqs:SendMessage"], [req])
        dlq = f"arn:aws:sqs:{region}:{account}:{c.dead_letter_queue}"
        self.assertEqual(web["sqs:ReceiveMessage"], [dlq, resp])
        self.assertEqual(web["sqs:ChangeMessageVisibility"], [dlq])
        self.assertEqual(web["sqs:DeleteMessage"], [resp])
        self.assertEqual(web["sqs:GetQueueAttributes"], [dlq, req, resp])
        self.assertEqual(web["ec2:StartInstances"], [f"arn:aws:ec2:{region}:{account}:instance/*"])
        self.assertEqual(web["iam:PassRole"], [f"arn:aws:iam::{account}:role/{c.role('app')}"])
        for role in (c.role("app"), c.role("web")):
            self.assertNotRegex(json.dumps(policy(self.clients["iam"], role)), r'"(s3|sqs|ec2|iam):\*"', role)
        self.assertEqual([a for a, resources in web.items() if "*" in resources],
                         ["ec2:DescribeInstanceStatus", "ec2:DescribeInstances"])
        start_stop = next(s for s in policy(self.clients["iam"], c.role("web"))["Statement"]
                          if "ec2:StopInstances" in s["Action"])
        self.assertEqual(start_stop["Condition"], {"StringEquals": {"aws:ResourceTag/fr-prefix": PREFIX}})

    def test_dry_runs_of_every_role_change_nothing(self):
        for role in (["provision", "--with-web"], ["teardown"], ["bake-ami", "i-0123"], ["web"], ["app"]):
            with self.subTest(role=role):
                out = self.setup_sh("--dry-run", *role)
                self.assertIn("would", out)
        self.assertEqual(self.clients["sqs"].list_queues(QueueNamePrefix=PREFIX).get("QueueUrls", []), [])
        self.assertEqual(self.instances(), [])


class ScriptsTest(unittest.TestCase):
    def test_setup_sh_passes_shellcheck(self):
        if not shutil.which("shellcheck"):
            self.skipTest("shellcheck not installed (./setup.sh test installs it where apt-get works)")
        done = subprocess.run(["shellcheck", "setup.sh", ".ci/run"], cwd=common.PROJECT_DIR,
                              capture_output=True, text=True)
        self.assertEqual((done.returncode, done.stdout), (0, ""))

    def test_systemd_units_pass_verify(self):
        if not shutil.which("systemd-analyze"):
            self.skipTest("systemd-analyze not installed")
        units = sorted((common.PROJECT_DIR / "systemd").glob("*.service"))
        self.assertEqual([u.name for u in units], ["face-autoscaler.service", "face-web.service", "face-worker.service"])
        with tempfile.TemporaryDirectory() as scratch:
            env_file = Path(scratch, "env")
            env_file.touch()
            # verify checks that ExecStart exists: point the units at this checkout instead of /opt.
            for unit in units:
                text = unit.read_text()
                self.assertIn("RestartPreventExitStatus=78", text)
                self.assertIn("NoNewPrivileges=yes", text)
                text = (text.replace("/opt/face-rec/venv/bin/python", PYTHON)
                        .replace("/opt/face-rec/app", str(common.PROJECT_DIR))
                        .replace("/etc/face-recognition.env", str(env_file)))
                Path(scratch, unit.name).write_text(text)
            done = subprocess.run(["systemd-analyze", "verify", *[str(Path(scratch, u.name)) for u in units]],
                                  capture_output=True, text=True)
        self.assertEqual((done.returncode, done.stdout + done.stderr), (0, ""))


if __name__ == "__main__":
    unittest.main()
