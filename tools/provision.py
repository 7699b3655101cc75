"""Create, and remove, everything the service needs in an AWS account (or a moto server).

    python tools/provision.py provision [--with-web] [--dry-run]
    python tools/provision.py teardown [--dry-run]
    python tools/provision.py bake-ami INSTANCE_ID [--dry-run]

`provision` is idempotent (a second run creates nothing) and prints what exists and what it made:
private, encrypted input/output/deploy buckets; the request queue (1 KB messages, redrive to a
dead-letter queue after MAX_RECEIVES) and the response queue; IAM roles and instance profiles for
the web and app tiers whose policies name the exact buckets and queues and only the actions each
tier uses; and the app-tier pool of FR_MAX_INSTANCES stopped instances from FR_AMI_ID.
`--with-web` also uploads this code to the deploy bucket and launches the web host (Amazon Linux
2023, Elastic IP, port 8000 open to FR_WEB_CIDR only) whose user data runs `setup.sh web`.
`teardown` removes all of it. `bake-ami` makes the app-tier image from an instance set up with
`setup.sh app`. Configuration is the services' FR_* variables (README).
"""
import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import autoscaler  # noqa: E402
import common  # noqa: E402

log = logging.getLogger("provision")

# Receives before a message that keeps failing is moved to the dead-letter queue.
MAX_RECEIVES = 3
WEB_NAME = "web-instance"
WEB_PORT = 8000
CODE_KEY = "face-rec.tar.gz"
AL2023_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
EC2_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def arns(config, account):
    """The ARNs the policies name."""
    sqs = f"arn:aws:sqs:{config.region}:{account}"
    return {
        "in_objects": f"arn:aws:s3:::{config.in_bucket}/*",
        "out_objects": f"arn:aws:s3:::{config.out_bucket}/*",
        "code_object": f"arn:aws:s3:::{config.deploy_bucket}/{CODE_KEY}",
        "req_queue": f"{sqs}:{config.req_queue}",
        "dead_letter_queue": f"{sqs}:{config.dead_letter_queue}",
        "resp_queue": f"{sqs}:{config.resp_queue}",
        "instances": f"arn:aws:ec2:{config.region}:{account}:instance/*",
        "app_role": f"arn:aws:iam::{account}:role/{config.role('app')}",
    }


def _statement(actions, resources, condition=None):
    statement = {"Effect": "Allow", "Action": sorted(actions), "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


def web_policy(config, account):
    """Web host: the web tier (upload, request, replies) and the autoscaler (depth, our pool only)."""
    a = arns(config, account)
    ours = {"StringEquals": {f"aws:ResourceTag/{common.PREFIX_TAG}": config.prefix}}
    return {"Version": "2012-10-17", "Statement": [
        # The output bucket: what a worker would have written, for answers from the result cache.
        _statement(["s3:PutObject"], [a["in_objects"], a["out_objects"]]),
        _statement(["s3:GetObject"], [a["code_object"]]),
        _statement(["sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:SendMessage"], [a["req_queue"]]),
        _statement(["sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:ReceiveMessage", "sqs:DeleteMessage"],
                   [a["resp_queue"]]),
        # Dead letters: tell the waiting client, then hide the message (kept for the operator);
        # their count is on the status page.
        _statement(["sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:ReceiveMessage", "sqs:ChangeMessageVisibility"],
                   [a["dead_letter_queue"]]),
        # The describe calls cannot be limited to resources.
        _statement(["ec2:DescribeInstances", "ec2:DescribeInstanceStatus"], ["*"]),
        _statement(["ec2:StartInstances", "ec2:StopInstances"], [a["instances"]], ours),
        # Pool repair: new instances must carry our tag, and may only get the app role.
        _statement(["ec2:RunInstances", "ec2:CreateTags"], [a["instances"]],
                   {"StringEquals": {f"aws:RequestTag/{common.PREFIX_TAG}": config.prefix}}),
        _statement(["ec2:RunInstances"], [
            f"arn:aws:ec2:{config.region}::image/*", f"arn:aws:ec2:{config.region}:{account}:subnet/*",
            f"arn:aws:ec2:{config.region}:{account}:network-interface/*",
            f"arn:aws:ec2:{config.region}:{account}:security-group/*",
            f"arn:aws:ec2:{config.region}:{account}:volume/*",
        ]),
        _statement(["iam:PassRole"], [a["app_role"]]),
    ]}


def app_policy(config, account):
    """App instances: read uploads, take and delete requests, send replies, write results."""
    a = arns(config, account)
    return {"Version": "2012-10-17", "Statement": [
        _statement(["s3:GetObject"], [a["in_objects"]]),
        _statement(["s3:PutObject"], [a["out_objects"]]),
        _statement(["sqs:GetQueueUrl", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"],
                   [a["req_queue"]]),
        _statement(["sqs:GetQueueUrl", "sqs:SendMessage"], [a["resp_queue"]]),
    ]}


class Provisioner:
    """Each `ensure_*` makes one resource exist as wanted and says so; `dry_run` only says."""

    def __init__(self, config, session, dry_run=False, out=print):
        self.config = config
        self.dry_run = dry_run
        self.out = out
        self.s3, self.sqs, self.ec2, self.iam = (session(name) for name in ("s3", "sqs", "ec2", "iam"))
        self.session = session

    def say(self, state, what):
        self.out(f"{'would ensure' if self.dry_run else state:<12} {what}")

    def account(self):
        if self.dry_run:
            return "ACCOUNT"
        return self.session("sts").get_caller_identity()["Account"]

    def ensure_bucket(self, name):
        what = f"bucket {name} (public access blocked, AES256 encryption)"
        if self.dry_run:
            return self.say("", what)
        try:
            self.s3.head_bucket(Bucket=name)
            state = "exists"
        except self.s3.exceptions.ClientError:
            location = {} if self.config.region == "us-east-1" else {
                "CreateBucketConfiguration": {"LocationConstraint": self.config.region}}
            self.s3.create_bucket(Bucket=name, **location)
            state = "created"
        self.s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
        self.s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
        self.say(state, what)

    def ensure_queue(self, name, attributes):
        """The queue's ARN; created if missing, `attributes` set either way."""
        what = f"queue {name} {json.dumps(attributes, sort_keys=True)}"
        if self.dry_run:
            self.say("", what)
            return f"arn:aws:sqs:{self.config.region}:ACCOUNT:{name}"
        try:
            url = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
            state = "exists"
        except self.sqs.exceptions.QueueDoesNotExist:
            url = self.sqs.create_queue(QueueName=name)["QueueUrl"]
            state = "created"
        self.sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        self.say(state, what)
        return self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def ensure_role(self, tier, policy):
        name = self.config.role(tier)
        what = f"IAM role + instance profile {name} ({len(policy['Statement'])} policy statements)"
        if self.dry_run:
            return self.say("", what)
        try:
            self.iam.get_role(RoleName=name)
            state = "exists"
        except self.iam.exceptions.NoSuchEntityException:
            self.iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(EC2_TRUST),
                                 Tags=[{"Key": common.PREFIX_TAG, "Value": self.config.prefix}])
            state = "created"
        self.iam.put_role_policy(RoleName=name, PolicyName=name, PolicyDocument=json.dumps(policy))
        try:
            profile = self.iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        except self.iam.exceptions.NoSuchEntityException:
            profile = self.iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        if not any(r["RoleName"] == name for r in profile["Roles"]):
            self.iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
        self.say(state, what)

    def ensure_pool(self):
        what = f"pool of {self.config.max_instances} stopped {common.APP_TIER_NAME}-N from {self.config.ami_id}"
        if not self.config.ami_id:
            return self.out(f"{'skipped':<12} app-tier pool: set FR_AMI_ID (./setup.sh bake-ami makes one)")
        if self.dry_run:
            return self.say("", what)
        created = autoscaler.repair_pool(self.ec2, self.config, common.describe_pool(self.ec2, self.config))
        self.say(f"created {len(created)}" if created else "exists", what)

    def provision(self, with_web=False):
        config = self.config
        for bucket in (config.in_bucket, config.out_bucket, config.deploy_bucket):
            self.ensure_bucket(bucket)
        size = str(common.MAX_MESSAGE_BYTES)
        dlq_arn = self.ensure_queue(config.dead_letter_queue, {"MaximumMessageSize": size,
                                                               "MessageRetentionPeriod": "1209600"})
        self.ensure_queue(config.req_queue, {
            "MaximumMessageSize": size,
            "VisibilityTimeout": str(config.visibility_timeout),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVES)}),
        })
        self.ensure_queue(config.resp_queue, {"MaximumMessageSize": size})
        account = self.account()
        self.ensure_role("web", web_policy(config, account))
        self.ensure_role("app", app_policy(config, account))
        self.ensure_pool()
        if with_web:
            self.ensure_web_host()

    def ensure_web_host(self):
        config = self.config
        if not config.web_cidr:
            raise SystemExit("config error: set FR_WEB_CIDR to the addresses that may reach port 8000")
        what = f"{WEB_NAME} ({config.web_instance_type}, Elastic IP, port {WEB_PORT} open to {config.web_cidr})"
        if self.dry_run:
            self.say("", f"code archive s3://{config.deploy_bucket}/{CODE_KEY}")
            return self.say("", what)
        self.s3.put_object(Bucket=config.deploy_bucket, Key=CODE_KEY, Body=code_archive())
        self.say("uploaded", f"code archive s3://{config.deploy_bucket}/{CODE_KEY}")
        existing = self._ours([WEB_NAME], ["pending", "running", "stopping", "stopped"])
        if existing:
            return self.say("exists", f"{what}: {existing[0]['InstanceId']}")
        group = self._web_security_group()
        image = self.session("ssm").get_parameter(Name=AL2023_PARAMETER)["Parameter"]["Value"]
        instance = self.ec2.run_instances(
            ImageId=image, InstanceType=config.web_instance_type, MinCount=1, MaxCount=1,
            SecurityGroupIds=[group], IamInstanceProfile={"Name": config.role("web")},
            UserData=web_user_data(config), TagSpecifications=[{"ResourceType": "instance", "Tags": self._tags(WEB_NAME)}],
        )["Instances"][0]["InstanceId"]
        self.ec2.get_waiter("instance_running").wait(InstanceIds=[instance])
        address = self.ec2.allocate_address(Domain="vpc", TagSpecifications=[
            {"ResourceType": "elastic-ip", "Tags": self._tags(WEB_NAME)}])
        self.ec2.associate_address(AllocationId=address["AllocationId"], InstanceId=instance)
        self.say("created", f"{what}: {instance} at http://{address['PublicIp']}:{WEB_PORT}/")

    def _tags(self, name):
        return [{"Key": "Name", "Value": name}, {"Key": common.PREFIX_TAG, "Value": self.config.prefix}]

    def _ours(self, names, states):
        reservations = self.ec2.describe_instances(Filters=[
            {"Name": f"tag:{common.PREFIX_TAG}", "Values": [self.config.prefix]},
            {"Name": "tag:Name", "Values": names},
            {"Name": "instance-state-name", "Values": states},
        ])["Reservations"]
        return [i for r in reservations for i in r["Instances"]]

    def _web_security_group(self):
        name = f"{self.config.prefix}-web"
        found = self.ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]}])["SecurityGroups"]
        if found:
            return found[0]["GroupId"]
        group = self.ec2.create_security_group(GroupName=name, Description="face-rec web tier: port 8000 only",
                                               TagSpecifications=[{"ResourceType": "security-group",
                                                                   "Tags": self._tags(name)}])["GroupId"]
        self.ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[{
            "IpProtocol": "tcp", "FromPort": WEB_PORT, "ToPort": WEB_PORT,
            "IpRanges": [{"CidrIp": self.config.web_cidr}]}])
        return group

    def teardown(self):
        """Remove everything `provision` made (instances, address, group, queues, buckets, roles)."""
        config = self.config
        instances = [i["InstanceId"] for i in self._ours(["*"], ["pending", "running", "stopping", "stopped"])] \
            if not self.dry_run else []
        self.out(f"{'would remove' if self.dry_run else 'removing':<12} instances tagged {common.PREFIX_TAG}={config.prefix} {instances}")
        if self.dry_run:
            for what in ("Elastic IP", f"security group {config.prefix}-web",
                         *(f"queue {q}" for q in (config.req_queue, config.resp_queue, config.dead_letter_queue)),
                         *(f"bucket {b} and its objects" for b in (config.in_bucket, config.out_bucket, config.deploy_bucket)),
                         *(f"IAM role + instance profile {config.role(t)}" for t in ("web", "app"))):
                self.out(f"{'would remove':<12} {what}")
            return
        if instances:
            self.ec2.terminate_instances(InstanceIds=instances)
            self.ec2.get_waiter("instance_terminated").wait(InstanceIds=instances)
        for address in self.ec2.describe_addresses(Filters=[
                {"Name": f"tag:{common.PREFIX_TAG}", "Values": [config.prefix]}])["Addresses"]:
            self.ec2.release_address(AllocationId=address["AllocationId"])
            self.out(f"{'removed':<12} Elastic IP {address['PublicIp']}")
        for group in self.ec2.describe_security_groups(Filters=[
                {"Name": "group-name", "Values": [f"{config.prefix}-web"]}])["SecurityGroups"]:
            self.ec2.delete_security_group(GroupId=group["GroupId"])
            self.out(f"{'removed':<12} security group {group['GroupName']}")
        for name in (config.req_queue, config.resp_queue, config.dead_letter_queue):
            try:
                self.sqs.delete_queue(QueueUrl=self.sqs.get_queue_url(QueueName=name)["QueueUrl"])
                self.out(f"{'removed':<12} queue {name}")
            except self.sqs.exceptions.QueueDoesNotExist:
                pass
        for bucket in (config.in_bucket, config.out_bucket, config.deploy_bucket):
            self._remove_bucket(bucket)
        for tier in ("web", "app"):
            self._remove_role(config.role(tier))

    def _remove_bucket(self, bucket):
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    self.s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
            self.s3.delete_bucket(Bucket=bucket)
            self.out(f"{'removed':<12} bucket {bucket}")
        except self.s3.exceptions.NoSuchBucket:
            pass

    def _remove_role(self, name):
        try:
            self.iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=name)
        except self.iam.exceptions.NoSuchEntityException:
            pass
        try:
            self.iam.delete_instance_profile(InstanceProfileName=name)
            self.iam.delete_role_policy(RoleName=name, PolicyName=name)
            self.iam.delete_role(RoleName=name)
            self.out(f"{'removed':<12} IAM role + instance profile {name}")
        except self.iam.exceptions.NoSuchEntityException:
            pass

    def bake_ami(self, instance_id):
        """An AMI of an instance set up with `setup.sh app`: the app-tier image for FR_AMI_ID."""
        name = f"{self.config.prefix}-app-tier-{instance_id}"
        if self.dry_run:
            return self.out(f"{'would create':<12} image {name} from {instance_id}")
        image = self.ec2.create_image(InstanceId=instance_id, Name=name,
                                      TagSpecifications=[{"ResourceType": "image", "Tags": self._tags(name)}])["ImageId"]
        self.ec2.get_waiter("image_available").wait(ImageIds=[image])
        self.out(f"{'created':<12} image {image}: set FR_AMI_ID={image} and run ./setup.sh provision")
        return image


def web_user_data(config):
    """Boot script of the web host: fetch this code from the deploy bucket, write the config, set up."""
    return f"""#!/bin/bash
set -euo pipefail
mkdir -p /opt/face-rec/src
aws s3 cp --region {config.region} s3://{config.deploy_bucket}/{CODE_KEY} /tmp/{CODE_KEY}
tar -xzf /tmp/{CODE_KEY} -C /opt/face-rec/src
cat > /etc/face-recognition.env <<'ENV'
FR_PREFIX={config.prefix}
FR_REGION={config.region}
FR_HOST=0.0.0.0
FR_MAX_INSTANCES={config.max_instances}
FR_AMI_ID={config.ami_id}
FR_INSTANCE_TYPE={config.instance_type}
ENV
/opt/face-rec/src/setup.sh web
"""


def code_archive():
    """A tar.gz of the committed code (HEAD): what is deployed is what is in git."""
    return subprocess.run(["git", "-C", str(common.PROJECT_DIR), "archive", "--format=tar.gz", "HEAD"],
                          capture_output=True, check=True).stdout


def provision(config, session):
    """Provision quietly, with clients from `session(service name)` (the local stack and the tests)."""
    Provisioner(config, session, out=log.info).provision()


def main(argv=None):
    parser = argparse.ArgumentParser(description="Provision, tear down or bake the app image.")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("provision")
    up.add_argument("--with-web", action="store_true")
    commands.add_parser("teardown")
    bake = commands.add_parser("bake-ami")
    bake.add_argument("instance_id")
    for command in commands.choices.values():
        command.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    config = common.load_config_or_exit()
    common.setup_logging(config.log_level)
    provisioner = Provisioner(config, lambda name: common.client(config, name), dry_run=args.dry_run)
    if args.command == "provision":
        provisioner.provision(args.with_web)
    elif args.command == "teardown":
        provisioner.teardown()
    else:
        provisioner.bake_ami(args.instance_id)


if __name__ == "__main__":
    main()
