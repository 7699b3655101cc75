"""Deployment: provisioning against moto, dry runs of every setup.sh role, shellcheck, systemd units."""

import base64
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import unittest
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import boto3

from core import cloud, guest, settings
from core.gallery import GalleryStore
from deploy import alarms, logs
from deploy.base import ProvisionError
from deploy.iam import app_policy, web_policy
from deploy.provision import Provisioner
from deploy.webhost import NOT_FOR_THE_WEB_HOST, web_host_settings, web_user_data
from model.files import read_gallery
from scaling import launching, pool
from simulation import awsiam, awslike
from tests.support import (
    FIXTURES,
    NO_GUESTS,
    PYTHON,
    aws,
    child_env,
    denials,
    refusals,
    start_moto,
    wait_until,
    without_permission,
)

PREFIX = "deploy"
CIDR = "203.0.113.0/24"
ALARM_EMAIL = "ops@example.com"
ALL_STATES = ["pending", "running", "stopping", "stopped"]
# Provisioning waits on every state change, again and again (the restart test provisions ~25
# times): AWS's delays at a hundredth (a stop 0.3 s, a new instance unknown for 0.02 s), every
# behaviour still there.
TIME_SCALE = 0.01
# A pool of 3 + 3 spares: launched in two waves, as the default 15 + 15 is, at a fifth of the cost.
MAX_INSTANCES = 3
POOL_SIZE = 2 * MAX_INSTANCES


def run_setup_sh(env, *args):
    return subprocess.run(["./setup.sh", *args], cwd=settings.PROJECT_DIR, env=env, capture_output=True, text=True, timeout=300)


def policy(iam, role):
    document = iam.get_role_policy(RoleName=role, PolicyName=role)["PolicyDocument"]
    return json.loads(document) if isinstance(document, str) else document


def statements(iam, role):
    """{action: sorted resources it is allowed on, over all Allow statements}."""
    allowed = {}
    for statement in (s for s in policy(iam, role)["Statement"] if s["Effect"] == "Allow"):
        for action in statement["Action"]:
            allowed.setdefault(action, set()).update(statement["Resource"])
    return {action: sorted(resources) for action, resources in allowed.items()}


class Deployment(unittest.TestCase):
    """A moto server (AWS-like) and what a deployment's checks need; no tests of its own."""

    @classmethod
    def setUpClass(cls):
        cls.endpoint = start_moto(cls, FR_SIMULATE_TIME_SCALE=TIME_SCALE)
        cls.env = child_env(
            FR_PREFIX=PREFIX,
            FR_ENDPOINT_URL=cls.endpoint,
            FR_AMI_ID="ami-0app",
            FR_WEB_CIDR=CIDR,
            FR_MAX_INSTANCES=MAX_INSTANCES,
            FR_RESULTS_TABLE=1,
            FR_GALLERY=FIXTURES / "data.pt",
            FR_WARM_UP=0,  # no guest runs here to say it is up: the warm-up is ScalingTest's
            FR_ALARM_EMAIL=ALARM_EMAIL,
            FR_BUDGET_USD=20,
        )
        cls.config = settings.load_config({"FR_PREFIX": PREFIX, "FR_RESULTS_TABLE": "1"})
        services = ("s3", "sqs", "ec2", "iam", "dynamodb", "ssm", "logs", "sns", "cloudwatch", "budgets")
        cls.clients = {name: aws(cls.endpoint, name) for name in services}

    def setup_sh(self, *args):
        return self.setup_sh_env(self.env, *args)

    def setup_sh_env(self, env, *args):
        """What `./setup.sh args` printed, having succeeded."""
        done = run_setup_sh(env, *args)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        return done.stdout

    def setup_sh_refused(self, env, *args):
        """What `./setup.sh args` said on stderr, having failed."""
        done = run_setup_sh(env, *args)
        self.assertNotEqual(done.returncode, 0, done.stdout)
        return done.stderr

    def instances(self, name="*", states=ALL_STATES, prefix=PREFIX):
        reservations = self.clients["ec2"].describe_instances(
            Filters=[
                {"Name": "tag:fr-prefix", "Values": [prefix]},
                {"Name": "tag:Name", "Values": [name]},
                {"Name": "instance-state-name", "Values": states},
            ]
        )["Reservations"]
        return [i for r in reservations for i in r["Instances"]]

    def check_all_gone(self, prefix=PREFIX):
        self.assertEqual(self.instances(prefix=prefix), [])
        self.assertEqual(self.clients["sqs"].list_queues(QueueNamePrefix=prefix).get("QueueUrls", []), [])
        buckets = [b["Name"] for b in self.clients["s3"].list_buckets()["Buckets"]]
        self.assertFalse([b for b in buckets if b.startswith(prefix)], buckets)
        roles = [r["RoleName"] for r in self.clients["iam"].list_roles()["Roles"]]
        self.assertFalse([r for r in roles if r.startswith(prefix)], roles)
        addresses = self.clients["ec2"].describe_addresses(Filters=[{"Name": "tag:fr-prefix", "Values": [prefix]}])
        self.assertEqual(addresses["Addresses"], [])
        groups = self.clients["ec2"].describe_security_groups(
            Filters=[{"Name": "group-name", "Values": [f"{prefix}-web", f"{prefix}-app"]}]
        )
        self.assertEqual(groups["SecurityGroups"], [])
        self.assertEqual([t for t in self.clients["dynamodb"].list_tables()["TableNames"] if t.startswith(prefix)], [])
        self.assertEqual(self.clients["logs"].describe_log_groups(logGroupNamePrefix=f"/{prefix}/")["logGroups"], [])
        self.assertEqual(self.clients["cloudwatch"].describe_alarms(AlarmNamePrefix=f"{prefix}-")["MetricAlarms"], [])
        self.assertFalse([t for t in self.clients["sns"].list_topics()["Topics"] if t["TopicArn"].endswith(f":{prefix}-alarms")])
        parameters = self.clients["ssm"].describe_parameters()["Parameters"]
        self.assertEqual([p["Name"] for p in parameters if p["Name"].startswith(f"/{prefix}/")], [])

    def check_pool_and_web_host(self, prefix=PREFIX, size=POOL_SIZE):
        # Every member once (a member launched twice, unseen by a describe, would be here twice),
        # every one stopped (also those launched moments before provisioning described the pool).
        members = self.instances("app-tier-instance-*", prefix=prefix)
        names = sorted(next(t["Value"] for t in i["Tags"] if t["Key"] == "Name") for i in members)
        self.assertEqual(names, sorted(f"app-tier-instance-{n}" for n in range(1, size + 1)))
        self.assertEqual({i["State"]["Name"] for i in members}, {"stopped"})
        self.assertEqual({i["ImageId"] for i in members}, {"ami-0app"})
        # Launched for hibernation: it cannot be turned on later.
        self.assertEqual({i["HibernationOptions"]["Configured"] for i in members}, {True})
        # In the app tier's own group (no inbound rule), never the VPC's default one.
        (group,) = self.clients["ec2"].describe_security_groups(Filters=[{"Name": "group-name", "Values": [f"{prefix}-app"]}])[
            "SecurityGroups"
        ]
        self.assertEqual({g["GroupId"] for i in members for g in i["SecurityGroups"]}, {group["GroupId"]})
        self.assertEqual(group["IpPermissions"], [])
        # Each member is told its pool's prefix and region at launch, whatever the image was set up with.
        for member in members[:2]:
            data = self.clients["ec2"].describe_instance_attribute(InstanceId=member["InstanceId"], Attribute="userData")
            self.assertEqual(
                settings.read_environment(base64.b64decode(data["UserData"]["Value"]).decode()),
                {"FR_PREFIX": prefix, "FR_REGION": "us-east-1", "FR_REQUEST_TIMEOUT": "120", "FR_IDLE_STOP": "300"},
            )
            # Its dead man's switch powers it off (core/heartbeat.py): stopped, a member still.
            behaviour = self.clients["ec2"].describe_instance_attribute(
                InstanceId=member["InstanceId"], Attribute="instanceInitiatedShutdownBehavior"
            )
            self.assertEqual(behaviour["InstanceInitiatedShutdownBehavior"]["Value"], "stop")
        volumes = self.clients["ec2"].describe_volumes(
            Filters=[{"Name": "attachment.instance-id", "Values": [i["InstanceId"] for i in members]}]
        )["Volumes"]
        # ami-0app is no image moto knows: Amazon Linux 2023's 8 GB, the agent's 4000 MB swap file
        # (t3.small's 2 GiB of RAM is less) and a GiB of room.
        self.assertEqual({(v["Encrypted"], v["Size"]) for v in volumes}, {(True, 8 + 4 + 1)})
        web = self.instances("web-instance", ["running"], prefix=prefix)
        self.assertEqual(len(web), 1)
        self.assertEqual(len(self.instances(prefix=prefix)), size + 1)
        addresses = self.clients["ec2"].describe_addresses(Filters=[{"Name": "tag:fr-prefix", "Values": [prefix]}])
        self.assertEqual([a.get("InstanceId") for a in addresses["Addresses"]], [web[0]["InstanceId"]])
        self.check_web_rule(CIDR, prefix)

    def check_web_rule(self, cidr, prefix=PREFIX):
        (web,) = self.instances("web-instance", ["running"], prefix=prefix)
        group = self.clients["ec2"].describe_security_groups(GroupIds=[web["SecurityGroups"][0]["GroupId"]])
        rules = group["SecurityGroups"][0]["IpPermissions"]
        self.assertEqual(
            [(r["FromPort"], r["ToPort"], [x["CidrIp"] for x in r["IpRanges"]]) for r in rules], [(8000, 8000, [cidr])]
        )


class ProvisionTest(Deployment):
    def test_provision_creates_everything_right_a_second_run_nothing_and_teardown_removes_it(self):
        first = self.setup_sh("provision", "--with-web")
        self.assertIn("created", first)
        # The real run did the plan the dry run says: a line a step, in its order (and lines of
        # waiting and such between them).
        config = settings.load_config({k: v for k, v in self.env.items() if k.startswith("FR_")})
        plan = Provisioner(config, lambda name: None).provision_steps(with_web=True)
        said = [line for line in first.splitlines() if not line.startswith(("waiting", "found", "revoked", "updated", "20"))]
        self.assertEqual(len(said), len(plan), first)
        for (what, _), line in zip(plan, said):
            self.assertEqual(what.split()[0], line[13:].split()[0], line)
        self.check_queues()
        self.check_buckets()
        self.check_gallery_and_its_key()
        self.check_table()
        self.check_log_groups()
        self.check_alarms()
        self.check_pool_and_web_host()
        self.check_policies()

        second = self.setup_sh("provision", "--with-web")
        self.assertNotIn("created", second)
        self.assertEqual(len(self.instances()), POOL_SIZE + 1)

        # With the web host up, its autoscaler launches missing members: provisioning launching them
        # too would race it and name a member twice.
        gone = [i["InstanceId"] for i in self.instances("app-tier-instance-*")[:2]]
        self.clients["ec2"].terminate_instances(InstanceIds=gone)
        pool.wait_for(self.clients["ec2"], gone, ["terminated"], 30)
        self.assertIn("2 missing", self.setup_sh("provision", "--with-web"))
        self.assertEqual(len(self.instances(states=list(pool.POOL_STATES))), POOL_SIZE - 2 + 1, "provisioning launched members")

        # A changed FR_WEB_CIDR replaces the rule: the old addresses reach port 8000 no more.
        self.setup_sh_env(dict(self.env, FR_WEB_CIDR="198.51.100.7/32"), "provision", "--with-web")
        self.check_web_rule("198.51.100.7/32")

        self.assertIn("left         nothing tagged", self.setup_sh("teardown"))
        self.assertIn("left         nothing tagged", self.setup_sh("teardown"))
        self.check_all_gone()
        self.assertEqual(refusals(self.moto_state), [])

    def test_a_bucket_name_another_account_owns_stops_provisioning_with_one_line(self):
        other = aws(self.endpoint, "s3")
        other.meta.events.register(
            "before-sign.s3.*", lambda request, **_: request.headers.__setitem__("x-moto-account-id", "111111111111")
        )
        other.create_bucket(Bucket="taken-in-bucket")
        said = self.setup_sh_refused(dict(self.env, FR_PREFIX="taken"), "provision")
        self.assertEqual(
            said.strip().splitlines()[-1],
            "config error: bucket taken-in-bucket belongs to another AWS "
            "account (bucket names are global): choose another FR_PREFIX",
        )
        self.assertEqual(self.clients["sqs"].list_queues(QueueNamePrefix="taken").get("QueueUrls", []), [])

    def test_provision_refuses_before_making_anything_when_the_vcpu_quota_is_too_small(self):
        env = dict(self.env, FR_PREFIX="quota", FR_MAX_INSTANCES="16")
        said = self.setup_sh_refused(env, "provision", "--with-web")
        self.assertIn("34 needed", said)
        self.assertIn("at most FR_MAX_INSTANCES=15 fits", said)
        self.assertEqual(self.clients["sqs"].list_queues(QueueNamePrefix="quota").get("QueueUrls", []), [])

    def test_the_vcpus_of_instances_not_ours_count_against_the_quota(self):
        ec2 = self.clients["ec2"]
        other = ec2.run_instances(ImageId="ami-12345678", InstanceType="t3.small", MinCount=1, MaxCount=1)["Instances"][0][
            "InstanceId"
        ]
        self.addCleanup(ec2.terminate_instances, InstanceIds=[other])
        pool.wait_for(ec2, [other], ["running"], 30)
        # Described as moto describes it (without CpuOptions): its type's 2 vCPUs leave room for 14.
        env = dict(self.env, FR_PREFIX="others", FR_MAX_INSTANCES="15")
        said = self.setup_sh_refused(env, "provision", "--with-web")
        self.assertIn("2 in use by other instances", said)
        self.assertIn("at most FR_MAX_INSTANCES=14 fits", said)

    def test_bake_ami_refuses_an_instance_launched_for_hibernation(self):
        ec2 = self.clients["ec2"]
        bake = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, HibernationOptions={"Configured": True})[
            "Instances"
        ][0]["InstanceId"]
        self.addCleanup(ec2.terminate_instances, InstanceIds=[bake])
        self.assertIn("launched for hibernation", self.setup_sh_refused(dict(self.env, FR_PREFIX="hib"), "bake-ami", bake))
        self.assertEqual(
            ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:fr-prefix", "Values": ["hib"]}])["Images"], []
        )

    def test_bake_ami_tags_stops_images_and_terminates_the_bake_instance(self):
        ec2 = self.clients["ec2"]
        # Baked on a 30 GB root volume: the image's snapshot is as large, and so must its members' be.
        bake = ec2.run_instances(
            ImageId="ami-12345678",
            MinCount=1,
            MaxCount=1,
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 30}}],
        )["Instances"][0]["InstanceId"]
        pool.wait_for(ec2, [bake], ["running"], 30)
        env = dict(self.env, FR_PREFIX="bake")
        out = self.setup_sh_env(env, "bake-ami", bake)
        image = re.search(r"image (ami-\w+)", out)[1]
        tags = {t["Key"]: t["Value"] for t in ec2.describe_images(ImageIds=[image])["Images"][0]["Tags"]}
        self.assertEqual(tags["fr-prefix"], "bake")
        self.assertIn(pool.instance_states(ec2, [bake])[bake], ("shutting-down", "terminated"))

        self.setup_sh_env(dict(env, FR_AMI_ID=image, FR_MAX_INSTANCES="1", FR_SPARE_INSTANCES="0"), "provision")
        (member,) = self.instances("app-tier-instance-*", prefix="bake")
        (volume,) = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [member["InstanceId"]]}])[
            "Volumes"
        ]
        self.assertEqual(volume["Size"], 30 + 4 + 1, "the image's snapshot, the agent's swap file, a GiB of room")

        kept = self.setup_sh_env(env, "teardown")
        self.assertIn(f"kept         image {image}", kept)
        self.assertIn(f"left         [('image', '{image}'), ('snapshot', 'snap-", kept)
        self.assertIn("left         nothing tagged", self.setup_sh_env(env, "teardown", "--images"))
        deregistered = [e for e in awslike.read_journal(self.moto_state) if e["action"] == "DeregisterImage"]
        self.assertEqual([(e["image"], e["deleted"]) for e in deregistered], [(image, True)])
        self.assertEqual(refusals(self.moto_state), [])

    def test_teardown_removes_the_snapshots_an_earlier_teardown_left(self):
        ec2 = self.clients["ec2"]
        bake = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        pool.wait_for(ec2, [bake], ["running"], 30)
        env = dict(self.env, FR_PREFIX="snaps")
        image = re.search(r"image (ami-\w+)", self.setup_sh_env(env, "bake-ami", bake))[1]
        # As an older teardown did: the image deregistered, its snapshot left (refused as in use for
        # `snapshot_release` after it: 0.25 s here, too short to see on a loaded machine).
        (snapshot,) = [m["Ebs"]["SnapshotId"] for m in ec2.describe_images(ImageIds=[image])["Images"][0]["BlockDeviceMappings"]]
        ec2.deregister_image(ImageId=image)
        out = self.setup_sh_env(env, "teardown", "--images")
        self.assertIn(f"removed      snapshot {snapshot}", out)
        self.assertIn("left         nothing tagged", out)

    def test_a_slow_image_is_waited_for_by_the_next_bake_and_teardown_passes_over_deleted_snapshots(self):
        # A moto of its own at a twentieth of AWS's timings: an image pending 3 s, a deleted snapshot
        # still listed for 0.25 s.
        endpoint = start_moto(self, name="moto-images", FR_SIMULATE_TIME_SCALE=0.05)
        ec2 = aws(endpoint, "ec2")
        bake = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        pool.wait_for(ec2, [bake], ["running"], 30)
        config = settings.load_config({"FR_PREFIX": "slow", **NO_GUESTS})
        provisioner = Provisioner(config, lambda name: aws(endpoint, name), out=lambda line: None)
        with mock.patch("deploy.image.IMAGE_PATIENCE", 0.5), self.assertRaises(ProvisionError) as impatient:
            provisioner.bake_ami(bake)
        self.assertIn(f"run ./setup.sh bake-ami {bake} again to wait for it", str(impatient.exception))
        image = provisioner.bake_ami(bake)
        journal = awslike.read_journal(self.moto_state)
        self.assertEqual([e["image"] for e in journal if e["action"] == "CreateImage"], [image], "one image, waited for twice")
        self.assertIn(pool.instance_states(ec2, [bake]).get(bake, "terminated"), ("shutting-down", "terminated"))
        said = []
        Provisioner(config, lambda name: aws(endpoint, name), out=said.append)._images(remove=True)
        self.assertTrue([line for line in said if line.startswith(f"removed      image {image}")], said)
        wait_until(
            lambda: Provisioner(config, lambda name: aws(endpoint, name)).remaining() == [],
            5,
            what="nothing left once EC2 lists the snapshots no more",
        )

    def as_role(self, service, region, role):
        """A client of `service` that calls as `role` (the AWS-like stack checks its policies)."""
        credentials = {k.lower(): v for k, v in awsiam.credentials(role).items()}
        return boto3.client(service, region_name=region, endpoint_url=self.endpoint, **credentials)

    def test_a_default_ebs_key_of_the_accounts_own_is_granted_to_pool_repair_through_ec2_only(self):
        region = "eu-west-2"  # the default EBS key is per region: the other tests' stays AWS managed
        ec2, kms = aws(self.endpoint, "ec2", region=region), aws(self.endpoint, "kms", region=region)
        key = kms.create_key(Description="the account's own EBS key")["KeyMetadata"]["Arn"]
        ec2.modify_ebs_default_kms_key_id(KmsKeyId=key)
        fr = {
            "FR_PREFIX": "ownkey",
            "FR_REGION": region,
            "FR_AMI_ID": "ami-0app",
            "FR_MAX_INSTANCES": "1",
            "FR_SPARE_INSTANCES": "0",
            **NO_GUESTS,
        }
        config = settings.load_config(fr)
        said = []
        Provisioner(config, lambda name: aws(self.endpoint, name, region=region), out=said.append).provision()
        self.assertTrue([line for line in said if line.startswith("found") and key in line], said)
        (grant,) = [s for s in policy(self.clients["iam"], config.role("web"))["Statement"] if s["Resource"] == [key]]
        self.assertEqual(grant["Condition"], {"StringEquals": {"kms:ViaService": f"ec2.{region}.amazonaws.com"}})
        # Pool repair as the web role (the autoscaler's principal): allowed with the grant, denied without.
        web = self.as_role("ec2", region, config.role("web"))
        (member,) = pool.describe(ec2, config)
        ec2.terminate_instances(InstanceIds=[member["id"]])
        wait_until(lambda: pool.describe(ec2, config) == [], 10, what="the member gone")
        without_permission(self, self.clients["iam"], config.role("web"), "kms:CreateGrant")
        with self.assertRaisesRegex(Exception, "UnauthorizedOperation"):
            launching.repair(web, config, [])
        self.assertEqual(denials(self.moto_state)[-1]["call"], "kms:CreateGrant")
        self.doCleanups()
        self.assertEqual(list(launching.repair(web, config, [])), ["app-tier-instance-1"])

    def test_with_ebs_encryption_by_default_the_own_key_is_granted_without_hibernation(self):
        # FR_HIBERNATE=0 asks for no encrypted volume, but the account encrypts every new one with its
        # default key: a launch needs the key's permissions all the same.
        region = "eu-west-3"
        ec2, kms = aws(self.endpoint, "ec2", region=region), aws(self.endpoint, "kms", region=region)
        key = kms.create_key(Description="the account's own EBS key")["KeyMetadata"]["Arn"]
        ec2.modify_ebs_default_kms_key_id(KmsKeyId=key)
        ec2.enable_ebs_encryption_by_default()
        fr = {"FR_PREFIX": "bydefault", "FR_REGION": region, "FR_AMI_ID": "ami-0app", "FR_MAX_INSTANCES": "1"}
        config = settings.load_config({**fr, "FR_SPARE_INSTANCES": "0", "FR_HIBERNATE": "0"})
        Provisioner(config, lambda name: aws(self.endpoint, name, region=region), out=lambda line: None).provision()
        self.assertTrue([s for s in policy(self.clients["iam"], config.role("web"))["Statement"] if s["Resource"] == [key]])
        web = self.as_role("ec2", region, config.role("web"))
        (member,) = pool.describe(ec2, config)
        ec2.terminate_instances(InstanceIds=[member["id"]])
        wait_until(lambda: pool.describe(ec2, config) == [], 10, what="the member gone")
        self.assertEqual(list(launching.repair(web, config, [])), ["app-tier-instance-1"])

    def test_provision_without_a_default_vpc_says_so_before_making_anything(self):
        ec2 = aws(self.endpoint, "ec2", region="eu-west-1")
        (vpc,) = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
        for subnet in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]:
            ec2.delete_subnet(SubnetId=subnet["SubnetId"])
        ec2.delete_vpc(VpcId=vpc["VpcId"])
        said = self.setup_sh_refused(dict(self.env, FR_PREFIX="novpc", FR_REGION="eu-west-1"), "provision")
        self.assertEqual(
            said.strip().splitlines()[-1],
            "config error: no default VPC in eu-west-1: the "
            "instances are launched into it (make one with 'aws ec2 create-default-vpc', or use another "
            "FR_REGION)",
        )
        sqs = aws(self.endpoint, "sqs", region="eu-west-1")
        self.assertEqual(sqs.list_queues(QueueNamePrefix="novpc").get("QueueUrls", []), [])

    def check_queues(self):
        sqs = self.clients["sqs"]
        request, reply = cloud.queue_urls(sqs, self.config)
        attributes = sqs.get_queue_attributes(QueueUrl=request, AttributeNames=["All"])["Attributes"]
        dlq = sqs.get_queue_url(QueueName=self.config.dead_letter_queue)["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.assertEqual(attributes["MaximumMessageSize"], "1024")
        self.assertEqual(json.loads(attributes["RedrivePolicy"]), {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 3})
        reply_size = sqs.get_queue_attributes(QueueUrl=reply, AttributeNames=["MaximumMessageSize"])["Attributes"]
        self.assertEqual(reply_size["MaximumMessageSize"], "8192")

    def check_gallery_and_its_key(self):
        found = GalleryStore(self.clients["s3"], self.config.gallery_bucket).current()
        self.assertIsNotNone(found, "the gallery was not seeded")
        names, _ = read_gallery(FIXTURES / "data.pt")
        self.assertEqual((found[0].version, [p["name"] for p in found[0].listing()]), (1, list(dict.fromkeys(names))))
        key = self.clients["ssm"].get_parameter(Name=self.config.admin_key_parameter, WithDecryption=True)["Parameter"]
        self.assertEqual(key["Type"], "SecureString")
        self.assertGreaterEqual(len(key["Value"]), 40)
        self.assertEqual(self.setup_sh("admin-key").strip(), key["Value"])
        settings_object = self.clients["s3"].get_object(Bucket=self.config.deploy_bucket, Key="face-recognition.env")
        host_settings = settings_object["Body"].read().decode()
        self.assertNotIn(key["Value"], host_settings)
        self.assertIn(f"FR_ADMIN_TOKEN_PARAMETER={self.config.admin_key_parameter}\n", host_settings)

    def check_buckets(self):
        s3 = self.clients["s3"]
        for bucket in (self.config.in_bucket, self.config.out_bucket, self.config.gallery_bucket, self.config.deploy_bucket):
            block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
            self.assertTrue(all(block.values()) and len(block) == 4, block)
            rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
            self.assertEqual(rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"], "AES256")
        # Uploads do not stay forever: FR_UPLOAD_DAYS (7 by default).
        (rule,) = s3.get_bucket_lifecycle_configuration(Bucket=self.config.in_bucket)["Rules"]
        self.assertEqual((rule["Status"], rule["Expiration"]), ("Enabled", {"Days": 7}))

    def check_table(self):
        table = self.clients["dynamodb"].describe_table(TableName=f"{PREFIX}-dynamoDB")["Table"]
        self.assertEqual(
            (table["TableStatus"], table["BillingModeSummary"]["BillingMode"], table["KeySchema"]),
            ("ACTIVE", "PAY_PER_REQUEST", [{"AttributeName": "stem", "KeyType": "HASH"}]),
        )

    def check_alarms(self):
        # moto evaluates no alarm (it keeps what PutMetricAlarm said): their definitions are asserted.
        (topic,) = [
            t["TopicArn"] for t in self.clients["sns"].list_topics()["Topics"] if t["TopicArn"].endswith(f":{PREFIX}-alarms")
        ]
        subscribed = self.clients["sns"].list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
        self.assertEqual([(s["Protocol"], s["Endpoint"]) for s in subscribed], [("email", ALARM_EMAIL)])
        policy = json.loads(self.clients["sns"].get_topic_attributes(TopicArn=topic)["Attributes"]["Policy"])
        self.assertEqual(policy["Statement"][0]["Principal"]["Service"], ["cloudwatch.amazonaws.com", "budgets.amazonaws.com"])
        found = {
            a["AlarmName"]: a for a in self.clients["cloudwatch"].describe_alarms(AlarmNamePrefix=f"{PREFIX}-")["MetricAlarms"]
        }
        config = dataclasses.replace(self.config, max_instances=MAX_INSTANCES)
        for wanted in alarms.alarm_definitions(config, topic):
            with self.subTest(alarm=wanted["AlarmName"]):
                alarm = found[wanted["AlarmName"]]
                for key in (
                    "Namespace",
                    "MetricName",
                    "Dimensions",
                    "Statistic",
                    "Threshold",
                    "ComparisonOperator",
                    "AlarmActions",
                ):
                    self.assertEqual(alarm[key], wanted[key], key)
        self.assertEqual(
            [(a["MetricName"], a["Threshold"]) for a in found.values()],
            [
                ("ApproximateNumberOfMessagesVisible", 0),
                ("ApproximateAgeOfOldestMessage", config.request_timeout),
                ("StepFailures", 1),
                ("StepFailures", 1),  # silent: no sample for 3 minutes (missing data breaching)
                ("MembersNotStopped", MAX_INSTANCES),
            ],
        )
        (budget,) = self.clients["budgets"].describe_budgets(AccountId="123456789012")["Budgets"]
        self.assertEqual((budget["BudgetName"], budget["BudgetLimit"]), (f"{PREFIX}-monthly", {"Amount": "20.00", "Unit": "USD"}))
        self.assertEqual(budget["CostFilters"], {"TagKeyValue": [f"user:fr-prefix${PREFIX}"]})

    def check_log_groups(self):
        found = self.clients["logs"].describe_log_groups(logGroupNamePrefix=f"/{PREFIX}/")["logGroups"]
        self.assertEqual(
            sorted((g["logGroupName"], g.get("retentionInDays")) for g in found),
            [(f"/{PREFIX}/{tier}", logs.RETENTION_DAYS) for tier in ("app", "autoscaler", "web")],
        )

    def check_policies(self):
        account, region, c = "123456789012", "us-east-1", self.config

        def log_group(tier):
            group = f"arn:aws:logs:{region}:{account}:log-group:/{PREFIX}/{tier}"
            return [group, f"{group}:*"]

        req = f"arn:aws:sqs:{region}:{account}:{c.request_queue}"
        resp = f"arn:aws:sqs:{region}:{account}:{c.response_queue}"
        app = statements(self.clients["iam"], c.role("app"))
        gallery = f"arn:aws:s3:::{c.gallery_bucket}"
        self.assertEqual(
            app,
            {
                # The gallery: read, never written (a change is the web tier's).
                "s3:GetObject": [f"{gallery}/current.json", f"{gallery}/versions/*", f"arn:aws:s3:::{c.in_bucket}/*"],
                # Without it a missing key is 403, not 404: the worker would retry instead of answering.
                "s3:ListBucket": [gallery, f"arn:aws:s3:::{c.in_bucket}"],
                "s3:PutObject": [f"arn:aws:s3:::{c.out_bucket}/*"],
                "sqs:ReceiveMessage": [req],
                "sqs:DeleteMessage": [req],
                "sqs:ChangeMessageVisibility": [req],
                # Whether the autoscaler is heard from (core/heartbeat.py).
                "sqs:ListQueueTags": [req],
                "sqs:GetQueueUrl": [req, resp],
                "sqs:SendMessage": [resp],
                # Its own mark for the pool (core/guest.py), on our instances: asserted whole below.
                "ec2:CreateTags": [f"arn:aws:ec2:{region}:{account}:instance/*"],
                # The CloudWatch agent's, to its tier's log group (deploy/logs.py).
                **dict.fromkeys(["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"], log_group("app")),
            },
        )
        (tagging,) = [s for s in policy(self.clients["iam"], c.role("app"))["Statement"] if s["Action"] == ["ec2:CreateTags"]]
        self.assertEqual(
            tagging["Condition"],
            {
                "StringEquals": {f"aws:ResourceTag/{settings.PREFIX_TAG}": PREFIX},
                "ForAllValues:StringEquals": {"aws:TagKeys": [guest.GUEST_TAG]},
            },
        )
        # Session Manager's way in (AmazonSSMManagedInstanceCore), but not to the admin key it would read.
        attached = self.clients["iam"].list_attached_role_policies(RoleName=c.role("app"))["AttachedPolicies"]
        self.assertEqual([p["PolicyName"] for p in attached], ["AmazonSSMManagedInstanceCore"])
        denied = [s for s in policy(self.clients["iam"], c.role("app"))["Statement"] if s["Effect"] == "Deny"]
        admin_key = f"arn:aws:ssm:{region}:{account}:parameter/{PREFIX}/admin-token"
        self.assertEqual(
            [(s["Action"], s["Resource"]) for s in denied], [(["ssm:GetParameter", "ssm:GetParameters"], [admin_key])]
        )
        web = statements(self.clients["iam"], c.role("web"))
        self.assertEqual(
            web["s3:PutObject"],
            [f"{gallery}/current.json", f"{gallery}/examples/*", f"{gallery}/versions/*", f"arn:aws:s3:::{c.in_bucket}/*"],
        )
        deleted = [f"{gallery}/examples/*", f"{gallery}/versions/*", f"arn:aws:s3:::{c.in_bucket}/*"]
        self.assertEqual(web["s3:DeleteObject"], deleted)
        self.assertEqual(web["s3:ListBucket"], [gallery])
        # The admin key: that one parameter, read only.
        self.assertEqual(
            {a: r for a, r in web.items() if a.startswith("ssm:")},
            {"ssm:GetParameter": [f"arn:aws:ssm:{region}:{account}:parameter/{PREFIX}/admin-token"]},
        )
        # The results table is the web tier's alone (the app role above has no DynamoDB action).
        table = f"arn:aws:dynamodb:{region}:{account}:table/{PREFIX}-dynamoDB"
        self.assertEqual(
            {a: r for a, r in web.items() if a.startswith("dynamodb:")},
            {"dynamodb:GetItem": [table], "dynamodb:PutItem": [table]},
        )
        self.assertEqual(
            web["s3:GetObject"],
            [
                f"arn:aws:s3:::{c.deploy_bucket}/face-rec.tar.gz",
                f"arn:aws:s3:::{c.deploy_bucket}/face-recognition.env",
                f"{gallery}/current.json",
                f"{gallery}/versions/*",
            ],
        )
        self.assertEqual(web["sqs:SendMessage"], [req])
        self.assertEqual(web["sqs:TagQueue"], [req], "the autoscaler's heartbeat, on the request queue only")
        self.assertEqual(web["logs:PutLogEvents"], sorted(log_group("autoscaler") + log_group("web")))
        (metrics,) = [
            s for s in policy(self.clients["iam"], c.role("web"))["Statement"] if s["Action"] == ["cloudwatch:PutMetricData"]
        ]
        self.assertEqual(metrics["Condition"], {"StringEquals": {"cloudwatch:namespace": alarms.NAMESPACE}})
        dlq = f"arn:aws:sqs:{region}:{account}:{c.dead_letter_queue}"
        # On the request queue: the requests an earlier web tier left, removed (webtier/orphans.py).
        self.assertEqual(web["sqs:ReceiveMessage"], [dlq, req, resp])
        self.assertEqual(web["sqs:ChangeMessageVisibility"], [dlq, req])
        self.assertEqual(web["sqs:DeleteMessage"], [req, resp])
        self.assertEqual(web["sqs:GetQueueAttributes"], [dlq, req, resp])
        self.assertEqual(web["ec2:StartInstances"], [f"arn:aws:ec2:{region}:{account}:instance/*"])
        self.assertEqual(web["iam:PassRole"], [f"arn:aws:iam::{account}:role/{c.role('app')}"])
        for role in (c.role("app"), c.role("web")):
            self.assertNotRegex(json.dumps(policy(self.clients["iam"], role)), r'"(s3|sqs|ec2|iam|dynamodb|ssm):\*"', role)
        self.assertEqual(
            [a for a, resources in web.items() if "*" in resources],
            [
                "cloudwatch:PutMetricData",  # in our namespace only: asserted above
                "ec2:DescribeImages",
                "ec2:DescribeInstanceStatus",
                "ec2:DescribeInstanceTypes",
                "ec2:DescribeInstances",
                "ec2:DescribeSecurityGroups",
            ],
        )
        self.assertEqual(
            [r for r in web["ec2:RunInstances"] if ":image/" in r],
            [f"arn:aws:ec2:{region}::image/ami-0app"],
            "FR_AMI_ID's image only",
        )
        start_stop = next(
            s for s in policy(self.clients["iam"], c.role("web"))["Statement"] if "ec2:StopInstances" in s["Action"]
        )
        self.assertEqual(start_stop["Condition"], {"StringEquals": {"aws:ResourceTag/fr-prefix": PREFIX}})
        # Tags only as part of RunInstances: tagging an existing instance as ours would let the web
        # role start and stop it.
        tagging = [s for s in policy(self.clients["iam"], c.role("web"))["Statement"] if "ec2:CreateTags" in s["Action"]]
        self.assertEqual(
            [(s["Action"], s["Condition"]) for s in tagging],
            [(["ec2:CreateTags"], {"StringEquals": {"ec2:CreateAction": "RunInstances", "aws:RequestTag/fr-prefix": PREFIX}})],
        )
        attached = self.clients["iam"].list_attached_role_policies(RoleName=c.role("web"))["AttachedPolicies"]
        self.assertEqual([p["PolicyName"] for p in attached], ["AmazonSSMManagedInstanceCore"])

    def test_dry_runs_of_every_role_change_nothing(self):
        for role in (["provision", "--with-web"], ["teardown"], ["bake-ami", "i-0123"], ["web"], ["app"]):
            with self.subTest(role=role):
                out = self.setup_sh("--dry-run", *role)
                self.assertIn("would", out)
                if role in (["web"], ["app"]):  # the CloudWatch agent, and its configuration for the host's tiers
                    self.assertIn("would run: dnf install -y -q amazon-cloudwatch-agent", out)
                    self.assertIn(f"python -m deploy.logs agent-config {role[0]} /etc/face-recognition.env", out)
        self.assertEqual(self.clients["sqs"].list_queues(QueueNamePrefix=PREFIX).get("QueueUrls", []), [])
        self.assertEqual(self.instances(), [])


# Restart tests run at once (each waits on moto's simulated delays most of its time).
STEPS_AT_ONCE = 4
CLIENTS_MADE = threading.Lock()


class ProvisionAfterTeardownTest(Deployment):
    """A class of its own: its waits (names AWS keeps for a while) run beside ProvisionTest's."""

    def test_provision_right_after_teardown_waits_for_the_queue_names_and_the_table_being_deleted(self):
        # A moto of its own where a queue name is refused for 24 s and a bucket name for 12 s, longer
        # than a teardown and the start of a provision take even on a slow machine (at half that, a
        # loaded machine took longer than the bucket's), and a table is DELETING for 4 s; no pool (no
        # FR_AMI_ID), so no instance waits.
        endpoint = start_moto(self, name="moto-queue-names", FR_SIMULATE_TIME_SCALE=0.4)
        env = child_env(FR_PREFIX="again", FR_ENDPOINT_URL=endpoint, FR_RESULTS_TABLE=1, FR_GALLERY=FIXTURES / "data.pt")
        self.assertIn("created      DynamoDB table again-dynamoDB", self.setup_sh_env(env, "provision"))
        # Deleted by someone else just now (DELETING for 2 s): its name is waited for, not refused.
        aws(endpoint, "dynamodb").delete_table(TableName="again-dynamoDB")
        config = settings.load_config({"FR_PREFIX": "again", "FR_RESULTS_TABLE": "1"})
        self.assertEqual(Provisioner(config, lambda name: aws(endpoint, name)).ensure_table(), "created")
        journal = [(e["action"], e.get("refused")) for e in awslike.read_journal(self.moto_state) if "table" in e]
        self.assertEqual(journal, [("CreateTable", None), ("DeleteTable", None), ("CreateTable", None)])
        said = [self.setup_sh_env(env, command) for command in ("teardown", "provision", "teardown")]
        self.assertIn("removed      DynamoDB table again-dynamoDB", said[0])
        self.assertIn("waiting      QueueDeletedRecently", said[1])
        # S3 too: the bucket names just deleted are refused for a while (OperationAborted), waited out.
        self.assertIn("waiting      OperationAborted", said[1])
        # And a queue just made is usable a second later: its ARN (the redrive policy's target) is waited for.
        self.assertIn("waiting      NonExistentQueue", said[1])
        self.assertIn("left         nothing tagged", said[2])


class InjectedFailure(Exception):
    pass


def read_only(operation):
    return operation.startswith(("Describe", "Get", "List", "Head"))


class RestartableProvisionTest(Deployment):
    """A provision stopped by a failure at any of its steps is finished by running it again."""

    def provisioner(self, prefix, on_call):
        """A Provisioner for `prefix` whose every AWS call, once made, is shown to on_call(service, operation)."""
        # A pool of 3 launched 2 at a time: every kind of step, in two waves, at a fifth of the cost.
        config = settings.load_config(
            {
                "FR_PREFIX": prefix,
                "FR_ENDPOINT_URL": self.endpoint,
                "FR_AMI_ID": "ami-0app",
                "FR_WEB_CIDR": CIDR,
                "FR_MAX_INSTANCES": "2",
                "FR_SPARE_INSTANCES": "1",
                "FR_RESULTS_TABLE": "1",
                **NO_GUESTS,
            }
        )

        def session(name):
            with CLIENTS_MADE:  # boto3's default session makes clients one thread at a time
                client = aws(self.endpoint, name)
            client.meta.events.register("after-call", lambda model, parsed, **_: "Error" in parsed or on_call(name, model.name))
            return client

        return Provisioner(config, session, out=lambda line: None)

    def test_provision_stopped_after_any_step_is_finished_by_the_next_run(self):
        calls = []
        self.provisioner("steps", lambda *call: calls.append(call)).provision(with_web=True)
        self.provisioner("steps", lambda *call: None).teardown()
        changes = [call for call in calls if not read_only(call[1])]
        # A step: a run of the same call (a wave's RunInstances are one step, the web host's
        # another), named by the call and how many times it was made before.
        every = [(call, changes[:n].count(call)) for n, call in enumerate(changes) if n == 0 or changes[n - 1] != call]
        # A step whose call follows the same call as an earlier step of its own call did (the next
        # bucket's, the app role's: the same code on another resource of the same kind) leaves what
        # that one left: restarted after once (31 steps of 43, on 2026-12-03).
        steps, seen = [], set()
        for n, (call, made_before) in enumerate(every):
            after = (call, n and every[n - 1][0])  # the call, and the one before it
            if after not in seen:
                seen.add(after)
                steps.append((call, made_before))
        self.assertGreaterEqual(len(steps), 25, steps)
        # Each step's runs have a prefix of their own: several run at once, their waits overlapping.
        with ThreadPoolExecutor(STEPS_AT_ONCE) as runs:
            failures = list(runs.map(self.restart_after, range(len(steps)), steps))
        for (call, made_before), failure in zip(steps, failures):
            with self.subTest(step=call, made_before=made_before):
                if failure:
                    raise failure
        self.assertEqual(refusals(self.moto_state), [])

    def restart_after(self, number, step):
        """Provision stopped by a failure right after `step`, then run again, checked, torn down and
        checked again: the AssertionError (or other error) it ended in, else None."""
        call, made_before = step
        prefix = f"restart{number}"
        made = []

        def crash_after(*done):
            made.append(done)
            if done == call and made.count(call) > made_before:
                raise InjectedFailure(done)

        try:
            with self.assertRaises(InjectedFailure):
                self.provisioner(prefix, crash_after).provision(with_web=True)
            self.provisioner(prefix, lambda *done: None).provision(with_web=True)
            self.check_pool_and_web_host(prefix, size=3)
            self.provisioner(prefix, lambda *done: None).teardown()
            self.check_all_gone(prefix)
        except Exception as e:
            return e
        return None


class ScriptsTest(unittest.TestCase):
    def dry_run(self, role, **fr):
        done = run_setup_sh(child_env(**fr), "--dry-run", role)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        return done.stdout

    def test_setup_sh_finds_a_python_3_11_where_python3_is_older(self):
        # Amazon Linux 2023 and CloudShell: python3 is 3.9, python3.11 is there beside it.
        with tempfile.TemporaryDirectory() as bin_dir:
            old = Path(bin_dir) / "python3"
            old.write_text('#!/bin/sh\n[ "$1" = -V ] && echo "Python 3.9.16"\nexit 1\n')
            old.chmod(0o755)
            (Path(bin_dir) / "python3.11").symlink_to(PYTHON)
            env = dict(child_env(), PATH=f"{bin_dir}:{os.environ['PATH']}")
            done = run_setup_sh(env, "--dry-run", "provision")
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertRegex(done.stdout, r"python3 is older than 3\.11: using python3\.1\d")

    def test_the_provision_dry_run_says_the_warm_up_unless_it_is_off(self):
        self.assertIn(
            "each wave warmed up: run until FR_HIBERNATE_AFTER_LAUNCH=120 s", self.dry_run("provision", FR_AMI_ID="ami-0app")
        )
        self.assertNotIn("warmed up", self.dry_run("provision", FR_AMI_ID="ami-0app", FR_WARM_UP=0))

    def test_setup_sh_app_puts_the_hibernation_hooks_where_the_agents_way_of_hibernating_runs_them(self):
        self.assertIn("would check how /etc/acpi/actions/sleep.sh hibernates: 'systemctl hibernate'", self.dry_run("app"))
        # The agent's acpid.sleep.sh lines (aws/amazon-ec2-hibinit-agent): 1.0.10-2, 1.0.5-1.0.9, older.
        table = [
            ("if systemctl hibernate; then\n", "systemd"),
            ("swapon --priority=$swap_priority /swap && /usr/sbin/pm-hibernate\n", "pm-utils"),
            ("swapon /swap && /usr/sbin/pm-hibernate\n", "pm-utils"),
            ("# systemctl hibernate, one day\nshutdown -h now\n", "unknown"),
        ]
        functions = (settings.PROJECT_DIR / "setup.sh").read_text().rsplit('main "$@"', 1)[0]
        for text, variant in table:
            with self.subTest(variant=variant), tempfile.NamedTemporaryFile("w") as action:
                action.write(text)
                action.flush()
                done = subprocess.run(
                    ["bash", "-c", functions + '\nsleep_command_of "$1"', "-", action.name], capture_output=True, text=True
                )
                self.assertEqual(done.stdout, variant + "\n", done.stderr)

    def test_setup_sh_app_fetches_the_weights_checked_against_the_pinned_size_and_sha256(self):
        out = self.dry_run("app")
        weights = "/opt/face-rec/models/20180402-114759-vggface2.pt"
        self.assertIn(
            f"to {weights}, checked against size 111898327 bytes and sha256 "
            "281cebca8662831adb987a874bdcb36e73f5b1c6dc5ee5878f305e985625d99b",
            out,
        )
        self.assertIn(f"curl -fsSL --max-filesize 111898327 -o {weights}.part", out)

    def test_setup_sh_app_installs_enables_and_checks_the_hibernation_agent(self):
        out = self.dry_run("app")
        self.assertIn("would run: dnf install -y -q ec2-hibinit-agent acpid", out)
        self.assertIn("would run: systemctl enable hibinit-agent.service acpid.service", out)
        self.assertIn("would check: hibinit-agent.service and acpid.service enabled, /etc/acpi/actions/sleep.sh", out)

    def test_setup_sh_web_restarts_the_units_so_a_second_run_runs_the_new_code(self):
        self.assertIn("would run: systemctl restart face-web.service face-autoscaler.service", self.dry_run("web"))

    def test_the_web_host_gets_the_model_files_and_the_table_only_with_the_results_table(self):
        weights = "to /opt/face-rec/models/20180402-114759-vggface2.pt, checked against size 111898327 bytes"
        self.assertNotIn(weights, self.dry_run("web"))
        self.assertIn(weights, self.dry_run("web", FR_RESULTS_TABLE=1))
        self.assertIn("FR_RESULTS_TABLE=1\n", web_host_settings(settings.load_config({"FR_RESULTS_TABLE": "1"})))
        actions = json.dumps(web_policy(settings.load_config({}), "123456789012"))
        self.assertNotIn("dynamodb", actions)
        self.assertNotIn("dynamodb", json.dumps(app_policy(settings.load_config({"FR_RESULTS_TABLE": "1"}), "1")))

    def test_the_hosts_get_every_module(self):
        copied = next(line for line in self.dry_run("web").splitlines() if line.startswith("would run: cp -r "))
        # What the hosts' processes import (the entry points, the model, the model's command line),
        # as files or folders at the top of the tree.
        imported = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys, pathlib, web, worker, autoscaler, model.recognizer, tools.recognize; root = pathlib.Path.cwd(); "
                "files = [pathlib.Path(m.__file__).resolve() for m in list(sys.modules.values()) "
                "if getattr(m, '__file__', None)]; "
                "print(*sorted({f.relative_to(root).parts[0] for f in files if f.is_relative_to(root) and f.exists() "
                "and not f.is_relative_to(root / '.venv')}))",
            ],
            cwd=settings.PROJECT_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        self.assertIn("webtier", imported)
        self.assertEqual([m for m in imported if f" {m} " not in copied and not copied.endswith(f" {m}")], [], copied)

    def test_web_host_user_data_retries_each_step_that_needs_the_network(self):
        script = web_user_data(settings.load_config({}))
        fetching = [line for line in script.splitlines() if "aws s3 cp" in line or "setup.sh web" in line]
        self.assertEqual(len(fetching), 3, script)
        self.assertTrue(all(line.startswith("retry ") for line in fetching), fetching)
        self.assertEqual(subprocess.run(["bash", "-n"], input=script, text=True).returncode, 0)

    def test_the_web_host_gets_every_setting_of_the_provisioning_run_but_its_own_and_local_modes(self):
        chosen = {
            "FR_SPARE_INSTANCES": "0",
            "FR_MIN_INSTANCES": "2",
            "FR_HIBERNATE": "0",
            "FR_HIBERNATE_AFTER_LAUNCH": "300",
            "FR_HIBERNATE_AFTER_RESUME": "90",
            "FR_SCALE_IN_GRACE": "4",
            "FR_SQS_COUNT_LAG": "30",
            "FR_VISIBILITY_TIMEOUT": "45",
            "FR_POLL_WAIT": "5",
            "FR_PREFIX": "mine",
            "FR_REGION": "eu-west-1",
            "FR_WEB_CIDR": "198.51.100.7/32",
            "FR_ENDPOINT_URL": "http://127.0.0.1:1",
            "FR_PORT": "9000",
            "FR_MATCH_THRESHOLD": "0.9",
            "FR_ADMIN_TOKEN": "secret-" * 4,
        }
        config = settings.load_config(chosen)
        text = web_host_settings(config)
        self.assertNotIn("secret-", text, "the admin key is in SSM, never in the settings object")
        self.assertIn(f"FR_ADMIN_TOKEN_PARAMETER={config.admin_key_parameter}\n", text)
        sent = settings.read_environment(text)
        self.assertEqual(sent["FR_HOST"], "0.0.0.0")
        self.assertEqual(sorted(sent), sorted({"FR_HOST", *(n for n in settings.variables() if n not in NOT_FOR_THE_WEB_HOST)}))
        on_host = settings.load_config(sent)
        for name in (n for n in chosen if n not in NOT_FOR_THE_WEB_HOST):
            with self.subTest(variable=name):
                self.assertEqual(settings.environment(on_host, [name]), settings.environment(config, [name]))
        # The host's own port, files and endpoint are not the operator's.
        self.assertEqual((on_host.port, on_host.endpoint_url), (8000, None))
        self.assertNotIn("FR_SPARE", web_user_data(config), "settings come from the deploy bucket, not user data")

    def test_the_web_tier_spools_uploads_on_disk_not_in_the_tmpfs(self):
        # Amazon Linux 2023's /tmp is a tmpfs of half the RAM; tempfile (the web tier's spool) honours TMPDIR.
        self.assertIn("Environment=TMPDIR=/var/tmp", (settings.PROJECT_DIR / "systemd/face-web.service").read_text())

    def test_setup_sh_passes_shellcheck(self):
        if not shutil.which("shellcheck"):
            self.skipTest("shellcheck not installed (./setup.sh test installs it where apt-get works)")
        done = subprocess.run(["shellcheck", "setup.sh", ".ci/run"], cwd=settings.PROJECT_DIR, capture_output=True, text=True)
        self.assertEqual((done.returncode, done.stdout), (0, ""))

    def test_systemd_units_pass_verify_with_what_they_share_in_one_drop_in(self):
        if not shutil.which("systemd-analyze"):
            self.skipTest("systemd-analyze not installed")
        units = sorted((settings.PROJECT_DIR / "systemd").glob("*.service"))
        self.assertEqual(
            [u.name for u in units],
            ["face-autoscaler.service", "face-web.service", "face-worker-sleep.service", "face-worker.service"],
        )
        shared = (settings.PROJECT_DIR / "systemd/face-.service.d/common.conf").read_text()
        for line in ("RestartPreventExitStatus=78", "NoNewPrivileges=yes", "ProtectSystem=strict", "User=face-rec"):
            self.assertIn(f"\n{line}\n", shared)
            self.assertFalse([u.name for u in units if line in u.read_text()], f"{line} is repeated in a unit")
        # A member's pool settings (its user data's) are read after the image's config file: they win.
        self.assertLess(
            shared.index("EnvironmentFile=/etc/face-recognition.env"), shared.index(f"EnvironmentFile=-{launching.POOL_SETTINGS}")
        )
        with tempfile.TemporaryDirectory() as scratch:
            env_file = Path(scratch, "env")
            env_file.touch()
            # verify checks that ExecStart exists: point the units at this checkout instead of /opt.
            Path(scratch, "face-.service.d").mkdir()
            for path in [*units, settings.PROJECT_DIR / "systemd/face-.service.d/common.conf"]:
                text = (
                    path.read_text()
                    .replace("/opt/face-rec/venv/bin/python", PYTHON)
                    .replace("/opt/face-rec/app", str(settings.PROJECT_DIR))
                    .replace("/etc/face-recognition.env", str(env_file))
                    .replace(launching.POOL_SETTINGS, str(env_file))
                )
                Path(scratch, path.relative_to(settings.PROJECT_DIR / "systemd")).write_text(text)
            # Found by name on a unit path: systemd then applies the prefix drop-in (given as files, it would not).
            done = subprocess.run(
                ["systemd-analyze", "verify", *[u.name for u in units]],
                capture_output=True,
                text=True,
                env=dict(os.environ, SYSTEMD_UNIT_PATH=f"{scratch}:"),
            )
        self.assertEqual((done.returncode, done.stdout + done.stderr), (0, ""))


if __name__ == "__main__":
    unittest.main()
