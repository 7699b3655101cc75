"""Create, and remove, everything the service needs in an AWS account (or a moto server).

    python -m tools.provision provision [--with-web] [--dry-run]
    python -m tools.provision teardown [--images] [--dry-run]
    python -m tools.provision bake-ami INSTANCE_ID [--dry-run]

`provision` is idempotent (a second run creates nothing) and prints what exists and what it made:
private, encrypted input/output/deploy buckets; the request queue (1 KB messages, redrive to a
dead-letter queue after MAX_RECEIVES) and the response queue; with FR_RESULTS_TABLE=1 the results
table (on-demand DynamoDB); IAM roles and instance profiles for the web and app tiers whose
policies name the exact buckets, queues and table and only the actions each tier uses; and the
app-tier pool of FR_MAX_INSTANCES stopped instances from FR_AMI_ID.
`--with-web` also uploads this code to the deploy bucket and launches the web host (Amazon Linux
2023, Elastic IP, port 8000 open to FR_WEB_CIDR only) whose user data runs `setup.sh web`.
`teardown` removes all of it (the web host first: its autoscaler must not see the pool go and launch
it again), then checks that nothing tagged ours is left; `--images` removes the app-tier images
too. `bake-ami` makes the app-tier image from an instance set up with `setup.sh app`, then
terminates that instance. Before anything is made, `provision` checks that the deployment's vCPUs
fit the account's On-Demand quota. Configuration is the services' FR_* variables (README).

Written against AWS's documented behaviour, not moto's (tests run it against tools/awslike.py).
Longer than our other modules on purpose: every AWS resource of the deployment, its IAM policies and
its removal in one file, in the order they are made.
"""

import argparse
import json
import math
import subprocess
import sys
import threading
import time
from functools import partial

import cloud
import common
import pool
import settings
from messages import MAX_MESSAGE_BYTES

log = common.EventLog("provision")

# Receives before a message that keeps failing is moved to the dead-letter queue.
MAX_RECEIVES = 3
WEB_PORT = 8000
BAKE_NAME = "app-bake-instance"
CODE_KEY = "face-rec.tar.gz"
# The web host's configuration, beside the code: written by every provision, read by the host at its
# first boot and at every update (user data runs only once).
SETTINGS_KEY = "face-recognition.env"
# FR_* variables provisioning does not hand the web host: the host's own (its address and port are
# fixed by the security group, its files and state are where setup.sh puts them), local mode's, and
# those only provisioning or the app tier reads. Every other variable goes, with this run's value.
NOT_FOR_THE_WEB_HOST = (
    "FR_ENDPOINT_URL",
    "FR_HOST",
    "FR_PORT",
    "FR_WEIGHTS",
    "FR_GALLERY",
    "FR_STATE_DIR",
    "FR_MOTO_PORT",
    "FR_SIMULATE",
    "FR_SIMULATE_TIME_SCALE",
    "FR_WEB_CIDR",
    "FR_WEB_INSTANCE_TYPE",
    "FR_TORCH_THREADS",
)
# Systems Manager's document that runs a shell script on an instance (its agent is part of AL2023).
RUN_SHELL = "AWS-RunShellScript"
# How long a web host just started may take before its SSM agent takes commands.
AGENT_PATIENCE = 300
# How long an update of the web host (setup.sh web: dnf, pip) may take, asked every UPDATE_POLL s.
UPDATE_PATIENCE = 1800
UPDATE_POLL = 2
AL2023_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
# Lets Systems Manager give an operator a shell on the web host (Session Manager), with no SSH.
SSM_POLICY = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
# Service Quotas: "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", in vCPUs.
VCPU_QUOTA = "L-1216C47A"
# Bounded waits, in seconds. IAM: reported up to about 2 minutes for an instance profile to be
# usable by EC2; SQS: a deleted queue's name is free again after 60 s; instance state changes:
# usually seconds, minutes when EC2 is busy.
PROFILE_PATIENCE = 180
QUEUE_REUSE_PATIENCE = 90
# A new queue is usable a second after it is made (CreateQueue reference).
QUEUE_READY_PATIENCE = 30
# S3: a bucket name just deleted is refused (OperationAborted) while the deletion propagates; AWS
# gives no bound ("try again"): minutes at most, by reports.
BUCKET_REUSE_PATIENCE = 600
INSTANCE_PATIENCE = 600
# An image is available once its snapshots are made: minutes, longer for a first snapshot of a
# volume (AWS documents no bound). A run that runs out of patience is finished by the next.
IMAGE_PATIENCE = 3600
IMAGE_POLL = 2
# DynamoDB: a table is CREATING, or DELETING, for seconds (AWS documents no bound).
TABLE_PATIENCE = 300
TABLE_KEY = {"AttributeName": "stem", "KeyType": "HASH"}
# Teardown terminates what it finds, waits, and looks again, at most this many times.
TEARDOWN_ROUNDS = 5
EC2_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def arns(config, account):
    """The ARNs the policies name."""
    sqs = f"arn:aws:sqs:{config.region}:{account}"
    return {
        "in_bucket": f"arn:aws:s3:::{config.in_bucket}",
        "in_objects": f"arn:aws:s3:::{config.in_bucket}/*",
        "out_objects": f"arn:aws:s3:::{config.out_bucket}/*",
        "code_object": f"arn:aws:s3:::{config.deploy_bucket}/{CODE_KEY}",
        "settings_object": f"arn:aws:s3:::{config.deploy_bucket}/{SETTINGS_KEY}",
        "request_queue": f"{sqs}:{config.request_queue}",
        "dead_letter_queue": f"{sqs}:{config.dead_letter_queue}",
        "response_queue": f"{sqs}:{config.response_queue}",
        "instances": f"arn:aws:ec2:{config.region}:{account}:instance/*",
        "image": f"arn:aws:ec2:{config.region}::image/{config.ami_id}",
        "app_role": f"arn:aws:iam::{account}:role/{config.role('app')}",
        "results_table": f"arn:aws:dynamodb:{config.region}:{account}:table/{config.results_table_name}",
    }


def _statement(actions, resources, condition=None):
    statement = {"Effect": "Allow", "Action": sorted(actions), "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


def web_policy(config, account, ebs_key=None):
    """Web host: the web tier (upload, request, replies, the results table) and the autoscaler
    (depth, our pool only). `ebs_key`: the account's default EBS key, when it is a key of its own
    (members' root volumes are encrypted with it: pool repair needs its permissions, through EC2 only)."""
    a = arns(config, account)
    ours = {"StringEquals": {f"aws:ResourceTag/{settings.PREFIX_TAG}": config.prefix}}
    # The results table is the web tier's alone: it looks uploads up and records the workers' answers.
    table = [_statement(["dynamodb:GetItem", "dynamodb:PutItem"], [a["results_table"]])] if config.results_table else []
    return {
        "Version": "2012-10-17",
        "Statement": [
            _statement(["s3:PutObject"], [a["in_objects"]]),
            *table,
            _statement(["s3:GetObject"], [a["code_object"], a["settings_object"]]),
            _statement(["sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:SendMessage"], [a["request_queue"]]),
            _statement(
                ["sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:ReceiveMessage", "sqs:DeleteMessage"], [a["response_queue"]]
            ),
            # Dead letters: tell the waiting client, then hide the message (kept for the operator);
            # their count is on the status page.
            _statement(
                ["sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:ReceiveMessage", "sqs:ChangeMessageVisibility"],
                [a["dead_letter_queue"]],
            ),
            # The describe calls cannot be limited to resources. Images and instance types: a member's
            # root volume for hibernation is sized from its image and its type's memory; security
            # groups: a member is launched into the app tier's (pool repair).
            _statement(
                [
                    "ec2:DescribeInstances",
                    "ec2:DescribeInstanceStatus",
                    "ec2:DescribeImages",
                    "ec2:DescribeInstanceTypes",
                    "ec2:DescribeSecurityGroups",
                ],
                ["*"],
            ),
            _statement(["ec2:StartInstances", "ec2:StopInstances"], [a["instances"]], ours),
            *launch_statements(config, account, ebs_key),
        ],
    }


def launch_statements(config, account, ebs_key=None):
    """The web role's pool repair: new instances must carry our tag and be of FR_INSTANCE_TYPE, from
    FR_AMI_ID, and may only get the app role (none without FR_AMI_ID: there is nothing to launch).
    Tags only as part of RunInstances: tagging an existing instance as ours would let this role
    start and stop any instance."""
    a = arns(config, account)
    return (
        [
            _statement(
                ["ec2:RunInstances"],
                [a["instances"]],
                {
                    "StringEquals": {
                        f"aws:RequestTag/{settings.PREFIX_TAG}": config.prefix,
                        "ec2:InstanceType": config.instance_type,
                    }
                },
            ),
            _statement(
                ["ec2:CreateTags"],
                [a["instances"]],
                {"StringEquals": {"ec2:CreateAction": "RunInstances", f"aws:RequestTag/{settings.PREFIX_TAG}": config.prefix}},
            ),
            _statement(
                ["ec2:RunInstances"],
                [
                    a["image"],
                    f"arn:aws:ec2:{config.region}:{account}:subnet/*",
                    f"arn:aws:ec2:{config.region}:{account}:network-interface/*",
                    f"arn:aws:ec2:{config.region}:{account}:security-group/*",
                    f"arn:aws:ec2:{config.region}:{account}:volume/*",
                ],
            ),
            _statement(["iam:PassRole"], [a["app_role"]], {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}),
            *(
                [
                    _statement(
                        ["kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext"],
                        [ebs_key],
                        {"StringEquals": {"kms:ViaService": f"ec2.{config.region}.amazonaws.com"}},
                    )
                ]
                if ebs_key
                else []
            ),
        ]
        if config.ami_id
        else []
    )


def app_policy(config, account):
    """App instances: read uploads, take and delete requests, send replies, write results."""
    a = arns(config, account)
    return {
        "Version": "2012-10-17",
        "Statement": [
            _statement(["s3:GetObject"], [a["in_objects"]]),
            # Without it S3 answers GetObject of a missing key with 403, not 404 (NoSuchKey): the worker
            # could not tell "gone" (answer at once) from "refused" (retry).
            _statement(["s3:ListBucket"], [a["in_bucket"]]),
            _statement(["s3:PutObject"], [a["out_objects"]]),
            _statement(
                ["sqs:GetQueueUrl", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"],
                [a["request_queue"]],
            ),
            _statement(["sqs:GetQueueUrl", "sqs:SendMessage"], [a["response_queue"]]),
        ],
    }


class ProvisionError(Exception):
    """What stops a provisioning step, in one line for the operator (main: stderr, exit status 1)."""


class Provisioner:
    """Provisioning, teardown and the bake are plans: lists of (what a step makes or removes, the
    step). The dry run says each `what`; the real run does the steps, in order, and each `ensure_*`
    step returns its state ("exists", "created", ...; or (state, a longer what)) for the line said.

    Every step looks at what exists first, so a run that failed half-way is finished by running it
    again, and a second run makes nothing new (it uploads the code and settings again and updates a
    running web host). Calls AWS refuses for a while, as documented (a queue
    name just deleted, an instance profile not yet propagated, a security group whose instances are
    still shutting down), are retried with backoff for a bounded time."""

    def __init__(self, config, session, dry_run=False, out=print):
        self.config = config
        self.dry_run = dry_run
        self.out = out
        self.s3, self.sqs, self.ec2, self.iam, self.dynamodb = (session(name) for name in ("s3", "sqs", "ec2", "iam", "dynamodb"))
        self.session = session
        self._account = None
        self.baked = None  # the image bake_ami made

    def say(self, state, what):
        self.out(f"{state:<12} {what}")

    def run_plan(self, steps, would):
        """Say every step (dry run: `would` it), or do it and say what it did. A step of None is
        skipped, its `what` saying why."""
        for what, step in steps:
            if step is None:
                self.say("skipped", what)
            elif self.dry_run:
                self.say(would, what)
            else:
                done = step()
                if done is not None:
                    state, said = done if isinstance(done, tuple) else (done, what)
                    self.say(state, said)

    def waiting(self, error, pause):
        self.out(f"{'waiting':<12} {cloud.error_code(error).rsplit('.', 1)[-1]}: again in {pause:.1f} s")

    def account(self):
        if self._account is None:
            self._account = self.session("sts").get_caller_identity()["Account"]
        return self._account

    def ebs_key(self):
        """The ARN of the account's default EBS key if members' root volumes are encrypted (FR_HIBERNATE,
        or the account's EBS encryption by default) and it is the account's own (customer managed),
        else None."""
        if not (self.config.hibernate or self.ec2.get_ebs_encryption_by_default()["EbsEncryptionByDefault"]):
            return None
        arn = self.ec2.get_ebs_default_kms_key_id()["KmsKeyId"]
        key = self.session("kms").describe_key(KeyId=arn)["KeyMetadata"]
        if key["KeyManager"] != "CUSTOMER":
            return None
        self.say(
            "found",
            f"default EBS key {key['Arn']} is the account's own: the web role may use it through EC2 "
            "(its key policy must let the account's IAM policies grant it)",
        )
        return key["Arn"]

    def ensure_vcpus(self, with_web):
        """Say how many vCPUs the deployment needs against the account's quota; refuse, before
        anything is made, when it cannot fit."""
        from botocore.exceptions import BotoCoreError, ClientError

        config = self.config
        wanted = self.vcpus_wanted(with_web)
        try:
            others = [i for i in self._live_instances() if not _tagged(i, settings.PREFIX_TAG, config.prefix)]
            # An instance described without CpuOptions counts its type's default vCPUs.
            types = set(wanted) | {i["InstanceType"] for i in others if "CpuOptions" not in i}
            vcpus = {
                t: self.ec2.describe_instance_types(InstanceTypes=[t])["InstanceTypes"][0]["VCpuInfo"]["DefaultVCpus"]
                for t in types
            }
            need = sum(vcpus[t] * n for t, n in wanted.items())
            quota = int(
                self.session("service-quotas").get_service_quota(ServiceCode="ec2", QuotaCode=VCPU_QUOTA)["Quota"]["Value"]
            )
        except (BotoCoreError, ClientError) as e:
            return "unknown", f"vCPU quota {VCPU_QUOTA} ({e}): make sure {wanted} fit"
        in_use = sum(
            i["CpuOptions"]["CoreCount"] * i["CpuOptions"]["ThreadsPerCore"] if "CpuOptions" in i else vcpus[i["InstanceType"]]
            for i in others
        )
        fits = (quota - in_use - (vcpus[config.web_instance_type] if with_web else 0)) // vcpus[config.instance_type]
        what = (
            f"vCPU quota {VCPU_QUOTA}: {quota}, {in_use} in use by other instances, {need} needed for {wanted} "
            f"running at once (the pool's {config.pool_size} members are launched {config.max_instances} at a time)"
        )
        if need > quota - in_use:
            raise ProvisionError(
                f"config error: {what}: at most FR_MAX_INSTANCES={max(fits, 0)} fits (or ask AWS for more in Service Quotas)"
            )
        return "fits", what

    def vcpus_wanted(self, with_web):
        """{instance type: how many run at once}."""
        config = self.config
        wanted = {config.instance_type: config.max_instances}
        if with_web:
            wanted[config.web_instance_type] = wanted.get(config.web_instance_type, 0) + 1
        return wanted

    def _live_instances(self):
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-state-name", "Values": list(pool.ACTIVE_STATES)}]
        )
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

    def ensure_bucket(self, name):
        from botocore.exceptions import ClientError

        taken = ProvisionError(
            f"config error: bucket {name} belongs to another AWS account (bucket names are global): choose another FR_PREFIX"
        )
        try:
            self.s3.head_bucket(Bucket=name)
            state = "exists"
        except ClientError as e:
            # HeadBucket has no body: its status is all S3 says (404 missing, 403 someone else's).
            if cloud.error_code(e) == "403":
                raise taken from None
            if cloud.error_code(e) not in ("404", "NoSuchBucket"):
                raise
            location = (
                {}
                if self.config.region == "us-east-1"
                else {"CreateBucketConfiguration": {"LocationConstraint": self.config.region}}
            )
            try:
                # A name deleted moments ago (a provision right after a teardown) is refused for a while.
                cloud.while_refused(
                    lambda: self.s3.create_bucket(Bucket=name, **location),
                    refused_with("OperationAborted"),
                    BUCKET_REUSE_PATIENCE,
                    self.waiting,
                )
            except ClientError as e:
                if cloud.error_code(e) != "BucketAlreadyExists":
                    raise
                raise taken from None
            state = "created"
        self.s3.put_public_access_block(
            Bucket=name,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
        self.s3.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
        )
        return state

    def ensure_queue(self, name, attributes):
        """Created if missing, `attributes` set either way; done once the queue answers."""
        try:
            url = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
            self.sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
            state = "exists"
        except self.sqs.exceptions.QueueDoesNotExist:
            # Made with its attributes: a new queue is not usable for its first second (CreateQueue
            # reference). A name deleted less than 60 s ago cannot be used again yet (a provision
            # right after a teardown).
            url = cloud.while_refused(
                lambda: self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"],
                refused_with("QueueDeletedRecently"),
                QUEUE_REUSE_PATIENCE,
                self.waiting,
            )
            state = "created"
        # Asked until the queue answers: the queue that names it as its dead-letter target needs it usable.
        cloud.while_refused(
            lambda: self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]),
            refused_with("NonExistentQueue"),
            QUEUE_READY_PATIENCE,
            self.waiting,
        )
        return state

    def queue_attributes(self, name):
        """Each queue's attributes (1 KB messages; the request queue's visibility timeout and its
        redrive to the dead-letter queue)."""
        config, size = self.config, str(MAX_MESSAGE_BYTES)
        if name == config.dead_letter_queue:
            return {"MaximumMessageSize": size, "MessageRetentionPeriod": "1209600"}
        if name == config.response_queue:
            return {"MaximumMessageSize": size}
        dead_letters = f"arn:aws:sqs:{config.region}:{self.account()}:{config.dead_letter_queue}"
        return {
            "MaximumMessageSize": size,
            "VisibilityTimeout": str(config.visibility_timeout),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dead_letters, "maxReceiveCount": str(MAX_RECEIVES)}),
        }

    def ensure_table(self):
        """The results table, with FR_RESULTS_TABLE=1: on-demand (paid per request, nothing while
        idle), keyed by stem, and ACTIVE: DynamoDB makes a table in the background and refuses its
        items until then. One still being deleted (a provision right after a teardown) is waited
        out first: its name cannot be used again until it is gone."""
        config, name = self.config, self.config.results_table_name
        table = self._table(name)
        if table and table["TableStatus"] == "DELETING":
            self._wait_table(name, None)
            table = None
        if table is None:
            self.dynamodb.create_table(
                TableName=name,
                BillingMode="PAY_PER_REQUEST",
                KeySchema=[TABLE_KEY],
                AttributeDefinitions=[{"AttributeName": TABLE_KEY["AttributeName"], "AttributeType": "S"}],
                Tags=[{"Key": settings.PREFIX_TAG, "Value": config.prefix}],
            )
            state = "created"
        elif table["KeySchema"] != [TABLE_KEY]:
            raise ProvisionError(
                f"error: table {name} exists keyed by {table['KeySchema']}, not by stem: remove it, or use another FR_PREFIX"
            )
        else:
            state = "exists"
        self._wait_table(name, "ACTIVE")
        return state

    def _table(self, name):
        """DescribeTable's Table, or None when there is none."""
        try:
            return self.dynamodb.describe_table(TableName=name)["Table"]
        except self.dynamodb.exceptions.ResourceNotFoundException:
            return None

    def _wait_table(self, name, status):
        """Wait until the table's status is `status` (None: gone); ProvisionError after TABLE_PATIENCE s."""
        deadline = time.monotonic() + TABLE_PATIENCE
        pause = 0.05
        while True:
            table = self._table(name)
            if (table and table["TableStatus"]) == status:
                return
            if time.monotonic() > deadline:
                raise ProvisionError(f"table {name} not {status or 'gone'} after {TABLE_PATIENCE} s")
            threading.Event().wait(pause)
            pause = min(pause * 2, 2.0)

    def ensure_role(self, tier, policy, managed=()):
        """`policy()`: the role's policy document (asked only when the step runs)."""
        name = self.config.role(tier)
        policy = policy()
        try:
            self.iam.get_role(RoleName=name)
            state = "exists"
        except self.iam.exceptions.NoSuchEntityException:
            self.iam.create_role(
                RoleName=name,
                AssumeRolePolicyDocument=json.dumps(EC2_TRUST),
                Tags=[{"Key": settings.PREFIX_TAG, "Value": self.config.prefix}],
            )
            state = "created"
        self.iam.put_role_policy(RoleName=name, PolicyName=name, PolicyDocument=json.dumps(policy))
        for arn in managed:
            self.iam.attach_role_policy(RoleName=name, PolicyArn=arn)
        try:
            profile = self.iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        except self.iam.exceptions.NoSuchEntityException:
            profile = self.iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        if not any(r["RoleName"] == name for r in profile["Roles"]):
            self.iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
        # IAM's own view first; EC2's may lag further behind (pool.run_instance retries for that).
        self.iam.get_waiter("instance_profile_exists").wait(InstanceProfileName=name)
        return state, f"IAM role + instance profile {name} ({len(policy['Statement'])} policy statements)" + "".join(
            f" + {m.rsplit('/', 1)[1]}" for m in managed
        )

    def ensure_pool(self):
        """All FR_MAX_INSTANCES + FR_SPARE_INSTANCES members, stopped. EC2 creates an instance
        `pending` and refuses to stop it until it runs: members are launched in waves of at most
        FR_MAX_INSTANCES (what ensure_vcpus found room for), each wave waited on until it runs, then
        stopped (plainly: too soon after launch to hibernate). The waits name the instances
        RunInstances returned, so a member not yet visible to describe is still stopped. Once the
        web host runs, its autoscaler owns the members' states: missing members are launched, one
        wave, and it stops them and launches the rest."""
        config = self.config
        launches, created = pool.Launches(), {}
        # Asked before anything is stopped: a running member of an autoscaled pool is at work.
        autoscaled = bool(self._ours([settings.WEB_HOST_NAME], pool.ACTIVE_STATES))
        while True:
            members = pool.describe(self.ec2, config)
            if not autoscaled:
                self._stop_active([i["id"] for i in members if i["state"] in pool.ACTIVE_STATES])
            launched = pool.repair(self.ec2, config, members, PROFILE_PATIENCE, launches)
            created.update(launched)
            if autoscaled or not launched:
                break
            self._stop_active(list(launched.values()))
        state = f"created {len(created)}" if created else "exists"
        if autoscaled:
            return state, f"{self.pool_what()} (states left to the autoscaler on {settings.WEB_HOST_NAME})"
        pool.wait_for(self.ec2, [i["id"] for i in pool.describe(self.ec2, config)], ["stopped"], INSTANCE_PATIENCE)
        return state, self.pool_what()

    def pool_what(self):
        config = self.config
        return (
            f"pool of {config.pool_size} stopped {pool.APP_TIER_NAME}-N ({config.max_instances} + "
            f"{config.pool_size - config.max_instances} spare) from {config.ami_id}"
        )

    def _stop_active(self, ids):
        """Wait for the instances `ids` (pending or running) to run, stop them, wait until stopped."""
        if ids:
            pool.wait_for(self.ec2, ids, ["running"], INSTANCE_PATIENCE)
            self.ec2.stop_instances(InstanceIds=ids)
            pool.wait_for(self.ec2, ids, ["stopped"], INSTANCE_PATIENCE)

    def ensure_default_vpc(self):
        """The pool and the web host are launched into the region's default VPC: say so at once
        when there is none (RunInstances would refuse every launch, half-way through)."""
        if not self.ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]:
            raise ProvisionError(
                f"config error: no default VPC in {self.config.region}: the instances are launched "
                "into it (make one with 'aws ec2 create-default-vpc', or use another FR_REGION)"
            )
        return "exists"

    def provision(self, with_web=False):
        if with_web and not self.config.web_cidr:
            raise ProvisionError("config error: set FR_WEB_CIDR to the addresses that may reach port 8000")
        self.run_plan(self.provision_steps(with_web), "would ensure")

    def provision_steps(self, with_web):
        """Provisioning in order, as (what is made, the step making it; None: skipped, and why)."""
        config = self.config
        queue_kinds = {
            config.dead_letter_queue: "dead letters, kept 14 days",
            config.request_queue: f"visibility {config.visibility_timeout} s, dead letters after {MAX_RECEIVES} receives",
            config.response_queue: "replies",
        }
        table = f"DynamoDB table {config.results_table_name} (on-demand, keyed by stem)"
        web = (
            f"{settings.WEB_HOST_NAME} ({config.web_instance_type}, Elastic IP, port {WEB_PORT} open to "
            f"{config.web_cidr}; one running already: updated by Run Command {RUN_SHELL}, its services restarted)"
        )
        return [
            (f"default VPC in {config.region}", self.ensure_default_vpc),
            (f"vCPU quota {VCPU_QUOTA} fits {self.vcpus_wanted(with_web)}", partial(self.ensure_vcpus, with_web)),
            *(
                (f"bucket {b} (public access blocked, AES256 encryption)", partial(self.ensure_bucket, b))
                for b in (config.in_bucket, config.out_bucket, config.deploy_bucket)
            ),
            # The dead-letter queue first: the request queue names it.
            *(
                (f"queue {q} (1 KB messages; {kind})", lambda q=q: self.ensure_queue(q, self.queue_attributes(q)))
                for q, kind in queue_kinds.items()
            ),
            (table, self.ensure_table) if config.results_table else ("results table: FR_RESULTS_TABLE=0", None),
            # SSM: an operator can get a shell on the web host without SSH (it has no key pair, no port 22).
            (
                f"IAM role + instance profile {config.role('web')} (its policy, + AmazonSSMManagedInstanceCore)",
                partial(self.ensure_role, "web", lambda: web_policy(config, self.account(), self.ebs_key()), [SSM_POLICY]),
            ),
            (
                f"IAM role + instance profile {config.role('app')} (its policy)",
                partial(self.ensure_role, "app", lambda: app_policy(config, self.account())),
            ),
            (
                f"security group {pool.app_security_group_name(config)} (app tier: no inbound, all outbound)",
                self.ensure_app_security_group,
            ),
            (f"{self.pool_what()}, launched {config.max_instances} at a time", self.ensure_pool)
            if config.ami_id
            else ("app-tier pool: set FR_AMI_ID (./setup.sh bake-ami makes one)", None),
            *(
                [
                    (f"code archive s3://{config.deploy_bucket}/{CODE_KEY}", self.upload_code),
                    (f"web host settings s3://{config.deploy_bucket}/{SETTINGS_KEY}", self.upload_settings),
                    (web, self.ensure_web_host),
                ]
                if with_web
                else []
            ),
        ]

    def ensure_web_host(self):
        """The web host, its security group and Elastic IP, each made only when missing: a run that
        stopped half-way (say between RunInstances and the address) is finished by the next."""
        config = self.config
        group = self._web_security_group()
        existing = self._ours([settings.WEB_HOST_NAME], pool.POOL_STATES)
        if existing:
            instance, state = existing[0]["id"], "exists"
            if existing[0]["state"] in ("stopping", "stopped"):
                pool.wait_for(self.ec2, [instance], ["stopped"], INSTANCE_PATIENCE)
                self.ec2.start_instances(InstanceIds=[instance])
                state = "started"
        else:
            image = self.session("ssm").get_parameter(Name=AL2023_PARAMETER)["Parameter"]["Value"]
            instance = pool.run_instance(
                self.ec2,
                PROFILE_PATIENCE,
                ImageId=image,
                InstanceType=config.web_instance_type,
                SecurityGroupIds=[group],
                IamInstanceProfile={"Name": config.role("web")},
                UserData=web_user_data(config),
                TagSpecifications=[{"ResourceType": "instance", "Tags": pool.tags(config, settings.WEB_HOST_NAME)}],
            )
            state = "created"
        pool.wait_for(self.ec2, [instance], ["running"], INSTANCE_PATIENCE)
        address = self._web_address()
        if address.get("InstanceId") != instance:
            self.ec2.associate_address(AllocationId=address["AllocationId"], InstanceId=instance)
        self.say(
            state,
            f"{settings.WEB_HOST_NAME} ({config.web_instance_type}, Elastic IP, port {WEB_PORT} open to "
            f"{config.web_cidr}): {instance} at http://{address['PublicIp']}:{WEB_PORT}/",
        )
        if state != "created":
            self.update_web_host(instance)

    def upload_code(self):
        self.s3.put_object(Bucket=self.config.deploy_bucket, Key=CODE_KEY, Body=code_archive())
        return "uploaded"

    def upload_settings(self):
        self.s3.put_object(Bucket=self.config.deploy_bucket, Key=SETTINGS_KEY, Body=web_host_settings(self.config).encode())
        return "uploaded"

    def update_web_host(self, instance):
        """Have a running web host fetch this run's code and settings and restart its services:
        the script its user data ran at first boot, sent through Systems Manager (Run Command),
        waited for until its agent says it ended (a failed update is this run's failure)."""
        from botocore.exceptions import WaiterError

        ssm = self.session("ssm")
        command = cloud.while_refused(
            lambda: ssm.send_command(
                InstanceIds=[instance],
                DocumentName=RUN_SHELL,
                Comment="face-rec update",
                Parameters={"commands": [web_host_script(self.config)]},
            )["Command"],
            refused_with("InvalidInstanceId"),
            AGENT_PATIENCE,
            self.waiting,
        )
        where = f"{settings.WEB_HOST_NAME} {instance} (Run Command {command['CommandId']})"
        try:
            ssm.get_waiter("command_executed").wait(
                CommandId=command["CommandId"],
                InstanceId=instance,
                WaiterConfig={"Delay": UPDATE_POLL, "MaxAttempts": math.ceil(UPDATE_PATIENCE / UPDATE_POLL)},
            )
        except WaiterError as e:
            status = e.last_response.get("Status") or e.last_response.get("Error", {}).get("Code", "no answer")
            errors = e.last_response.get("StandardErrorContent", "").strip().splitlines()
            raise ProvisionError(
                f"{where}: the update ended {status}" + (f": {errors[-1]}" if errors else "") + "; its services may be "
                f"down: see its output with aws ssm get-command-invocation --command-id {command['CommandId']} "
                f"--instance-id {instance}"
            ) from None
        self.say("updated", f"{where}: new code and settings, services restarted")

    def _web_address(self):
        found = self.ec2.describe_addresses(Filters=[{"Name": f"tag:{settings.PREFIX_TAG}", "Values": [self.config.prefix]}])[
            "Addresses"
        ]
        if found:
            return found[0]
        return self.ec2.allocate_address(
            Domain="vpc",
            TagSpecifications=[{"ResourceType": "elastic-ip", "Tags": pool.tags(self.config, settings.WEB_HOST_NAME)}],
        )

    def _ours(self, names, states):
        return pool.ours(self.ec2, self.config, names, states)

    def _security_group(self, name, description):
        """The id of our security group `name`, made (no inbound rule; all outbound) when missing."""
        found = self.ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]}])["SecurityGroups"]
        if found:
            return found[0]["GroupId"], "exists"
        return self.ec2.create_security_group(
            GroupName=name,
            Description=description,
            TagSpecifications=[{"ResourceType": "security-group", "Tags": pool.tags(self.config, name)}],
        )["GroupId"], "created"

    def ensure_app_security_group(self):
        """The members' security group: no inbound rule, all outbound (SQS, S3). Not the VPC's
        default group, whose rules a hardened account strips (CIS, Security Hub EC2.2): members
        there could reach nothing, and every upload would wait out its timeout."""
        _, state = self._security_group(pool.app_security_group_name(self.config), "face-rec app tier: no inbound")
        return state

    def _web_security_group(self):
        group, _ = self._security_group(f"{self.config.prefix}-web", "face-rec web tier: port 8000 only")
        rules = self.ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"]
        allowed = {r["CidrIp"] for rule in rules if rule.get("FromPort") == WEB_PORT for r in rule.get("IpRanges", [])}
        # A changed FR_WEB_CIDR replaces the old rule: the addresses it named may reach port 8000 no more.
        for cidr in sorted(allowed - {self.config.web_cidr}):
            self.ec2.revoke_security_group_ingress(GroupId=group, IpPermissions=[self._web_rule(cidr)])
            self.out(f"{'revoked':<12} port {WEB_PORT} from {cidr}")
        if self.config.web_cidr not in allowed:
            self.ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[self._web_rule(self.config.web_cidr)])
        return group

    @staticmethod
    def _web_rule(cidr):
        return {"IpProtocol": "tcp", "FromPort": WEB_PORT, "ToPort": WEB_PORT, "IpRanges": [{"CidrIp": cidr}]}

    def teardown(self, images=False):
        """Remove everything `provision` made; with `images`, the app-tier images too.

        The web host goes first, and is waited on until terminated: its autoscaler would otherwise
        see the pool shutting down and launch it again. Then every other instance tagged ours, until
        none is left; then what they used (address, security group), queues, buckets and roles."""
        self.run_plan(self.teardown_steps(images), "would remove")

    def teardown_steps(self, images):
        """Teardown in order, as (what is removed, the step removing it): the dry run says the one,
        the real run does the other."""
        config = self.config
        queues = (config.request_queue, config.response_queue, config.dead_letter_queue)
        buckets = (config.in_bucket, config.out_bucket, config.deploy_bucket)
        return [
            (
                f"{settings.WEB_HOST_NAME} (first, waited on: its autoscaler must stop before the pool)",
                partial(self._terminate, [settings.WEB_HOST_NAME]),
            ),
            (f"every other instance tagged {settings.PREFIX_TAG}={config.prefix}", partial(self._terminate, ["*"])),
            ("Elastic IP", self._release_addresses),
            *(
                (f"security group {name}", partial(self._remove_security_group, name))
                for name in (f"{config.prefix}-web", pool.app_security_group_name(config))
            ),
            *((f"queue {name}", partial(self._remove_queue, name)) for name in queues),
            *((f"bucket {bucket} and its objects", partial(self._remove_bucket, bucket)) for bucket in buckets),
            (f"DynamoDB table {config.results_table_name} and its items (if any)", self._remove_table),
            *(
                (f"IAM role + instance profile {config.role(tier)}", partial(self._remove_role, config.role(tier)))
                for tier in ("web", "app")
            ),
            (
                "app-tier images and their snapshots" if images else "app-tier images: kept (--images removes them)",
                partial(self._images, remove=images),
            ),
        ]

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

    def _remove_role(self, name):
        """Each part on its own (a run stopped half-way leaves some of them), each gone is fine."""
        calls = [
            lambda: self.iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=name),
            lambda: self.iam.delete_instance_profile(InstanceProfileName=name),
            lambda: self.iam.detach_role_policy(RoleName=name, PolicyArn=SSM_POLICY),
            lambda: self.iam.delete_role_policy(RoleName=name, PolicyName=name),
            lambda: self.iam.delete_role(RoleName=name),
        ]
        removed = False
        for call in calls:
            try:
                call()
                removed = True
            except self.iam.exceptions.NoSuchEntityException:
                pass
        if removed:
            self.out(f"{'removed':<12} IAM role + instance profile {name}")

    def _images(self, remove):
        """Our app-tier images (and their snapshots) cost storage while they exist: removed, or named.

        DeregisterImage deletes the image's snapshots itself (DeleteAssociatedSnapshots): deleted
        after it, one by one, they are refused as in use for a moment, and once the image is gone
        only their tag finds them. So snapshots tagged ours and left (by an older teardown, or one
        stopped half-way) are deleted too, waiting out that refusal."""
        images = self.ec2.describe_images(
            Owners=["self"], Filters=[{"Name": f"tag:{settings.PREFIX_TAG}", "Values": [self.config.prefix]}]
        )["Images"]
        for image in images:
            snapshots = [m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings", []) if "Ebs" in m]
            if not remove:
                self.out(
                    f"{'kept':<12} image {image['ImageId']} and snapshots {snapshots} (billed as EBS "
                    "snapshot storage; ./setup.sh teardown --images removes them)"
                )
                continue
            self.ec2.deregister_image(ImageId=image["ImageId"], DeleteAssociatedSnapshots=True)
            self.out(f"{'removed':<12} image {image['ImageId']} and snapshots {snapshots}")
        if not remove:
            return
        for snapshot in self.ec2.describe_snapshots(
            OwnerIds=["self"], Filters=[{"Name": f"tag:{settings.PREFIX_TAG}", "Values": [self.config.prefix]}]
        )["Snapshots"]:
            try:
                cloud.while_refused(
                    lambda: self.ec2.delete_snapshot(SnapshotId=snapshot["SnapshotId"]),
                    refused_with("InvalidSnapshot.InUse"),
                    INSTANCE_PATIENCE,
                    self.waiting,
                )
            except self.ec2.exceptions.ClientError as e:
                # Deleted already (by DeregisterImage just now): EC2 may list it for a while yet.
                if cloud.error_code(e) != "InvalidSnapshot.NotFound":
                    raise
                continue
            self.out(f"{'removed':<12} snapshot {snapshot['SnapshotId']} (left by an earlier run)")

    def remaining(self):
        """What of ours is still there and may be billed: [(kind, id)]."""
        left = [("instance", i["id"]) for i in self._ours(["*"], pool.LIVE_STATES)]
        left += [("table", self.config.results_table_name)] if self._table(self.config.results_table_name) else []
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

    def bake_ami(self, instance_id):
        """An AMI of an instance set up with `setup.sh app`, the app-tier image for FR_AMI_ID: its id
        (None in a dry run).

        The instance must not be launched for hibernation (EC2 makes no image of one: the pool is
        launched for it, from this image). It is tagged ours first (so that teardown finds it,
        should this stop half-way), stopped (its worker would otherwise take requests, and the
        image is made of a quiet disk), imaged, and terminated once the image is available."""
        name = f"{self.config.prefix}-app-tier-{instance_id}"
        self.run_plan(
            [
                (f"tag {instance_id} {settings.PREFIX_TAG}={self.config.prefix}, stop it", partial(self._bake_stop, instance_id)),
                (f"image {name} from {instance_id}, waited on until available", partial(self._bake_image, instance_id, name)),
                (f"terminate {instance_id}", partial(self._bake_done, instance_id)),
            ],
            "would",
        )
        return self.baked

    def _bake_stop(self, instance_id):
        (reservation,) = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        if reservation["Instances"][0].get("HibernationOptions", {}).get("Configured"):
            raise ProvisionError(
                f"error: {instance_id} was launched for hibernation, and EC2 makes no image of such "
                "an instance: run ./setup.sh app on an instance launched without it"
            )
        self.ec2.create_tags(Resources=[instance_id], Tags=pool.tags(self.config, BAKE_NAME))
        self.ec2.stop_instances(InstanceIds=[instance_id])
        pool.wait_for(self.ec2, [instance_id], ["stopped"], INSTANCE_PATIENCE)
        return "stopped"

    def _bake_image(self, instance_id, name):
        from botocore.exceptions import WaiterError

        # An image of that name made by an earlier run (stopped, or out of patience) is waited for again.
        made = self.ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])["Images"]
        if made:
            image = made[0]["ImageId"]
        else:
            image = self.ec2.create_image(
                InstanceId=instance_id,
                Name=name,
                TagSpecifications=[{"ResourceType": "image", "Tags": pool.tags(self.config, name)}],
            )["ImageId"]
        try:
            self.ec2.get_waiter("image_available").wait(
                ImageIds=[image], WaiterConfig={"Delay": IMAGE_POLL, "MaxAttempts": math.ceil(IMAGE_PATIENCE / IMAGE_POLL)}
            )
        except WaiterError:
            raise ProvisionError(
                f"image {image} is not available after {IMAGE_PATIENCE} s (its snapshot is still being "
                f"made): run ./setup.sh bake-ami {instance_id} again to wait for it"
            ) from None
        # Tagged once they exist (moto cannot tag snapshots in CreateImage): teardown finds them by tag.
        snapshots = [
            m["Ebs"]["SnapshotId"]
            for m in self.ec2.describe_images(ImageIds=[image])["Images"][0].get("BlockDeviceMappings", [])
            if "Ebs" in m
        ]
        if snapshots:
            self.ec2.create_tags(Resources=snapshots, Tags=pool.tags(self.config, name))
        self.baked = image
        return "available", f"image {image} ({name})"

    def _bake_done(self, instance_id):
        self.ec2.terminate_instances(InstanceIds=[instance_id])
        return "created", (
            f"image {self.baked} (bake instance {instance_id} terminated): set FR_AMI_ID={self.baked} "
            "and run ./setup.sh provision"
        )


def _tagged(instance, key, value):
    return any(t["Key"] == key and t["Value"] == value for t in instance.get("Tags", []))


def refused_with(code):
    """A `passing` test for cloud.while_refused: AWS's error `code` (query or JSON protocol form)."""
    return lambda error: cloud.error_code(error).endswith(code)


def web_host_settings(config):
    """The web host's /etc/face-recognition.env: every FR_* variable but NOT_FOR_THE_WEB_HOST, with
    this run's values, and the host's own address."""
    names = [n for n in settings.variables() if n not in NOT_FOR_THE_WEB_HOST]
    return "FR_HOST=0.0.0.0\n" + "".join(f"{k}={v}\n" for k, v in settings.environment(config, names).items())


def web_host_script(config):
    """What sets the web host up, and updates it: fetch the code and settings from the deploy
    bucket, put the settings in place, run `setup.sh web` (idempotent; it restarts the services).
    Each step that needs the network is retried (one passing failure of S3, dnf or PyPI must not
    leave a host nobody can reach: it has no SSH; the web role lets Session Manager in)."""
    bucket = f"s3://{config.deploy_bucket}"
    return f"""set -euo pipefail
# One at a time: an update sent while the first boot's user data still runs waits for it.
exec 9>/var/lock/face-rec-setup
flock 9
retry() {{
    local attempt
    for attempt in 1 2 3 4 5; do
        "$@" && return 0
        echo "face-rec: attempt $attempt of 5 failed: $*" >&2
        sleep $((attempt * 20))
    done
    return 1
}}
mkdir -p /opt/face-rec/src
retry aws s3 cp --region {config.region} {bucket}/{CODE_KEY} /var/tmp/{CODE_KEY}
retry aws s3 cp --region {config.region} {bucket}/{SETTINGS_KEY} /var/tmp/{SETTINGS_KEY}
tar -xzf /var/tmp/{CODE_KEY} -C /opt/face-rec/src
install -m 0640 /var/tmp/{SETTINGS_KEY} /etc/face-recognition.env
retry /opt/face-rec/src/setup.sh web
"""


def web_user_data(config):
    """Boot script of the web host (user data runs once, on the first boot): web_host_script."""
    return "#!/bin/bash\n" + web_host_script(config)


def code_archive():
    """A tar.gz of the committed code (HEAD): what is deployed is what is in git."""
    return subprocess.run(
        ["git", "-C", str(settings.PROJECT_DIR), "archive", "--format=tar.gz", "HEAD"], capture_output=True, check=True
    ).stdout


def provision(config, session):
    """Provision with clients from `session(service name)`, each line said as a log event (the local
    stack and the tests)."""
    Provisioner(config, session, out=lambda line: log.info("provision", detail=" ".join(line.split()))).provision()


def main(argv=None):
    parser = argparse.ArgumentParser(description="Provision, tear down or bake the app image.")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("provision")
    up.add_argument("--with-web", action="store_true")
    down = commands.add_parser("teardown")
    down.add_argument("--images", action="store_true", help="remove the app-tier images and snapshots too")
    bake = commands.add_parser("bake-ami")
    bake.add_argument("instance_id")
    for command in commands.choices.values():
        command.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    config = settings.load_config_or_exit()
    common.setup_logging(config.log_level)
    provisioner = Provisioner(config, lambda name: cloud.client(config, name), dry_run=args.dry_run)
    try:
        if args.command == "provision":
            provisioner.provision(args.with_web)
        elif args.command == "teardown":
            provisioner.teardown(args.images)
            if not args.dry_run:
                left = provisioner.remaining()
                print(f"{'left':<12} {left}" if left else f"{'left':<12} nothing tagged {settings.PREFIX_TAG}={config.prefix}")
        else:
            provisioner.bake_ami(args.instance_id)
    except ProvisionError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
