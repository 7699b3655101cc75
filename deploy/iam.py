"""The IAM side of a deployment: each tier's policy document, built by pure functions (unit-tested),
naming the exact buckets, queues and table and only the actions that tier uses; and the steps that
put roles and instance profiles in place, and remove them."""

import json

from core import gallery, guest, settings
from deploy import alarms, logs
from deploy.webhost import CODE_KEY, SETTINGS_KEY

# The gallery bucket's objects (core/gallery.py), by what they are.
GALLERY_KEYS = {"pointer": gallery.POINTER, "versions": "versions/*", "examples": "examples/*"}

# Lets Systems Manager give an operator a shell on the web host and the members (Session Manager), with no SSH.
SSM_POLICY = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
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
        "gallery_bucket": f"arn:aws:s3:::{config.gallery_bucket}",
        **{f"gallery_{part}": f"arn:aws:s3:::{config.gallery_bucket}/{key}" for part, key in GALLERY_KEYS.items()},
        "code_object": f"arn:aws:s3:::{config.deploy_bucket}/{CODE_KEY}",
        "settings_object": f"arn:aws:s3:::{config.deploy_bucket}/{SETTINGS_KEY}",
        "request_queue": f"{sqs}:{config.request_queue}",
        "dead_letter_queue": f"{sqs}:{config.dead_letter_queue}",
        "response_queue": f"{sqs}:{config.response_queue}",
        "instances": f"arn:aws:ec2:{config.region}:{account}:instance/*",
        "image": f"arn:aws:ec2:{config.region}::image/{config.ami_id}",
        "app_role": f"arn:aws:iam::{account}:role/{config.role('app')}",
        "results_table": f"arn:aws:dynamodb:{config.region}:{account}:table/{config.results_table_name}",
        "admin_key": f"arn:aws:ssm:{config.region}:{account}:parameter{config.admin_key_parameter}",
        # A tier's log group and its streams (deploy/logs.py).
        **{
            f"logs_{tier}": [f"arn:aws:logs:{config.region}:{account}:log-group:{group}{part}" for part in ("", ":*")]
            for tier, group in ((tier, logs.log_group(config, tier)) for tier in logs.SOURCES)
        },
    }


# What the CloudWatch agent calls to ship a host's journal to its tier's group (deploy/logs.py).
LOG_SHIPPING = ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"]


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
            # DeleteObject: an upload answered with an error is removed at once.
            _statement(["s3:PutObject", "s3:DeleteObject"], [a["in_objects"]]),
            *table,
            _statement(["s3:GetObject"], [a["code_object"], a["settings_object"]]),
            # The gallery's one writer (core/gallery.py): a new snapshot, then the pointer; older
            # snapshots and a removed person's example images deleted. ListBucket: a missing pointer
            # (a gallery not seeded yet) is a 404, not a 403.
            _statement(["s3:GetObject", "s3:PutObject"], [a["gallery_pointer"], a["gallery_versions"]]),
            _statement(["s3:PutObject", "s3:DeleteObject"], [a["gallery_examples"]]),
            _statement(["s3:DeleteObject"], [a["gallery_versions"]]),
            _statement(["s3:ListBucket"], [a["gallery_bucket"]]),
            _statement(LOG_SHIPPING, a["logs_web"] + a["logs_autoscaler"]),
            # The autoscaler's metrics for the alarms (scaling/metrics.py), in our namespace only.
            _statement(["cloudwatch:PutMetricData"], ["*"], {"StringEquals": {"cloudwatch:namespace": alarms.NAMESPACE}}),
            # The admin key, read at start: a SecureString of the AWS managed key aws/ssm, which "grants
            # Decrypt permission to all IAM principals in the AWS account" (Systems Manager user guide,
            # "Restricting decryption of SecureString parameter values"): no kms statement is needed.
            _statement(["ssm:GetParameter"], [a["admin_key"]]),
            # Receive, delete, hand back: the requests an earlier web tier left (webtier/orphans.py).
            # Tag: the autoscaler's heartbeat, which the members' dead man's switch reads (core/heartbeat.py).
            _statement(
                [
                    "sqs:GetQueueUrl",
                    "sqs:GetQueueAttributes",
                    "sqs:SendMessage",
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:TagQueue",
                ],
                [a["request_queue"]],
            ),
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
    """App instances: read uploads and the gallery, take and delete requests, send replies, write
    results, tag their instance with their guest's state."""
    a = arns(config, account)
    return {
        "Version": "2012-10-17",
        "Statement": [
            _statement(["s3:GetObject"], [a["in_objects"]]),
            # Without it S3 answers GetObject of a missing key with 403, not 404 (NoSuchKey): the worker
            # could not tell "gone" (answer at once) from "refused" (retry).
            _statement(["s3:ListBucket"], [a["in_bucket"]]),
            _statement(["s3:PutObject"], [a["out_objects"]]),
            # The gallery, read at start and again when a request names a newer version.
            _statement(["s3:GetObject"], [a["gallery_pointer"], a["gallery_versions"]]),
            _statement(["s3:ListBucket"], [a["gallery_bucket"]]),
            # ListQueueTags: whether the autoscaler is heard from (core/heartbeat.py, the dead man's switch).
            _statement(
                [
                    "sqs:GetQueueUrl",
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:ListQueueTags",
                ],
                [a["request_queue"]],
            ),
            _statement(["sqs:GetQueueUrl", "sqs:SendMessage"], [a["response_queue"]]),
            _statement(LOG_SHIPPING, a["logs_app"]),
            # AmazonSSMManagedInstanceCore (attached: Session Manager's way in) lets ssm:GetParameter*
            # read any parameter, and the aws/ssm key decrypts for anyone in the account: not the admin key.
            {"Effect": "Deny", "Action": ["ssm:GetParameter", "ssm:GetParameters"], "Resource": [a["admin_key"]]},
            # The guest's word on itself for the pool (core/guest.py): one tag key, on our instances only.
            _statement(
                ["ec2:CreateTags"],
                [a["instances"]],
                {
                    "StringEquals": {f"aws:ResourceTag/{settings.PREFIX_TAG}": config.prefix},
                    "ForAllValues:StringEquals": {"aws:TagKeys": [guest.GUEST_TAG]},
                },
            ),
        ],
    }


class RoleSteps:
    """Provisioner's steps for the tiers' roles and instance profiles."""

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
        # IAM's own view first; EC2's may lag further behind (launching.run_instance retries for that).
        self.iam.get_waiter("instance_profile_exists").wait(InstanceProfileName=name)
        return state, f"IAM role + instance profile {name} ({len(policy['Statement'])} policy statements)" + "".join(
            f" + {m.rsplit('/', 1)[1]}" for m in managed
        )

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
