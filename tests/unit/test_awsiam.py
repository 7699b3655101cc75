"""The AWS-like stack's IAM evaluation (simulation/awsiam.py), in-process: what it checks for a call, and
how a policy decides it. The whole stack enforcing it is tested where the stacks run (test_scaling,
test_pipeline)."""

import unittest

from core import settings
from deploy.iam import app_policy, web_policy
from simulation import awsiam

ACCOUNT, REGION = "123456789012", "us-east-1"
CONFIG = settings.load_config({"FR_PREFIX": "iam", "FR_AMI_ID": "ami-0app"})


def params(values):
    return lambda name, default=None: values.get(name, default)


def run_instances(**override):
    values = {
        "ImageId": "ami-0app",
        "InstanceType": "t3.small",
        "IamInstanceProfile": {"Name": "iam-app"},
        "TagSpecifications": [
            {
                "ResourceType": "instance",
                "Tags": [{"Key": "fr-prefix", "Value": "iam"}, {"Key": "Name", "Value": "app-tier-instance-1"}],
            }
        ],
    }
    values.update(override)
    return values


class FakeIam:
    """An instance profile `iam-app` with the role `iam-app`, as moto's backend answers."""

    class Profile:
        arn = f"arn:aws:iam::{ACCOUNT}:instance-profile/iam-app"
        roles = [type("Role", (), {"arn": f"arn:aws:iam::{ACCOUNT}:role/iam-app"})]

    def get_instance_profile(self, name):
        if name != "iam-app":
            raise LookupError(name)
        return self.Profile


def allowed(document, service, action, values, ec2=None):
    """The first request IAM would deny for the call, or None when all are allowed."""
    for iam_action, resource, context in awsiam.requested(
        service, action, params(values), (REGION, ACCOUNT), ec2=ec2, iam=FakeIam()
    ):
        if awsiam.decision([document], iam_action, resource, context) != "allow":
            return iam_action, resource
    return None


class EvaluationTest(unittest.TestCase):
    def test_an_action_is_allowed_only_by_a_statement_that_names_it_and_its_resource(self):
        document = {"Statement": [{"Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": "arn:aws:sqs:*:*:q"}]}
        self.assertEqual(awsiam.decision([document], "sqs:SendMessage", "arn:aws:sqs:us-east-1:1:q", {}), "allow")
        self.assertEqual(awsiam.decision([document], "SQS:sendmessage", "arn:aws:sqs:us-east-1:1:q", {}), "allow")
        self.assertEqual(awsiam.decision([document], "sqs:SendMessage", "arn:aws:sqs:us-east-1:1:other", {}), "implicit")
        self.assertEqual(awsiam.decision([document], "sqs:DeleteMessage", "arn:aws:sqs:us-east-1:1:q", {}), "implicit")

    def test_an_explicit_deny_wins_over_any_allow(self):
        documents = [
            {"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]},
            {"Statement": {"Effect": "Deny", "NotAction": "s3:GetObject", "Resource": "*"}},
        ]
        self.assertEqual(awsiam.decision(documents, "s3:GetObject", "arn:aws:s3:::b/k", {}), "allow")
        self.assertEqual(awsiam.decision(documents, "s3:PutObject", "arn:aws:s3:::b/k", {}), "deny")

    def test_conditions_keys_ignore_case_an_absent_key_fails_a_test_and_passes_a_negated_one(self):
        context = {
            "aws:ResourceTag/fr-prefix": "ours",
            "aws:TagKeys": ["Name", "fr-prefix"],
            "aws:SourceArn": "arn:aws:sqs:us-east-1:123456789012:p-requests",
        }
        table = [
            ("StringEquals", "AWS:resourcetag/fr-prefix", "ours", True),
            ("StringEquals", "aws:ResourceTag/fr-prefix", ["theirs", "ours"], True),
            ("StringEquals", "aws:ResourceTag/fr-prefix", "Ours", False),
            ("StringEqualsIgnoreCase", "aws:ResourceTag/fr-prefix", "OURS", True),
            ("StringLike", "aws:ResourceTag/fr-prefix", "ou*", True),
            ("StringNotEquals", "aws:ResourceTag/fr-prefix", "ours", False),
            ("StringEquals", "aws:RequestTag/fr-prefix", "ours", False),
            ("StringNotEquals", "aws:RequestTag/fr-prefix", "ours", True),
            ("StringEqualsIfExists", "aws:RequestTag/fr-prefix", "ours", True),
            ("ForAllValues:StringEquals", "aws:TagKeys", ["Name", "fr-prefix"], True),
            ("ForAllValues:StringEquals", "aws:TagKeys", ["Name"], False),
            ("ForAnyValue:StringEquals", "aws:TagKeys", ["Name"], True),
            # Negated: each value tested on its own ("matches none"), then all of them or any.
            ("ForAllValues:StringNotEquals", "aws:TagKeys", ["Name"], False),
            ("ForAllValues:StringNotEquals", "aws:TagKeys", ["Owner"], True),
            ("ForAnyValue:StringNotEquals", "aws:TagKeys", ["Name"], True),
            ("ForAnyValue:StringNotEquals", "aws:TagKeys", ["Name", "fr-prefix"], False),
            # Absent: ForAllValues holds, ForAnyValue does not (negated or not).
            ("ForAllValues:StringEquals", "aws:RequestTag/fr-prefix", "ours", True),
            ("ForAnyValue:StringEquals", "aws:RequestTag/fr-prefix", "ours", False),
            ("ForAnyValue:StringNotEquals", "aws:RequestTag/fr-prefix", "ours", False),
            # ArnEquals takes wildcards, as ArnLike does.
            ("ArnEquals", "aws:SourceArn", "arn:aws:sqs:*:123456789012:p-*", True),
            ("ArnNotEquals", "aws:SourceArn", "arn:aws:sqs:*:123456789012:p-*", False),
        ]
        lowered = {k.lower(): v for k, v in context.items()}
        for operator, key, wanted, holds in table:
            with self.subTest(operator=operator, key=key, wanted=wanted):
                self.assertEqual(awsiam.condition_holds(operator, key, wanted, lowered), holds)

    def test_an_operator_the_stack_cannot_evaluate_says_so(self):
        with self.assertRaises(awsiam.UnknownCondition):
            awsiam.condition_holds("NumericLessThan", "k", "1", {"k": "0"})

    def test_batch_calls_of_sqs_are_authorized_as_their_single_message_action(self):
        wanted = awsiam.requested("sqs", "DeleteMessageBatch", params({"QueueUrl": "http://h/123456789012/q"}), (REGION, ACCOUNT))
        self.assertEqual(wanted, [("sqs:DeleteMessage", f"arn:aws:sqs:{REGION}:{ACCOUNT}:q", {})])

    def test_a_role_is_named_by_its_access_key_and_anyone_else_is_the_operator(self):
        signed = "AWS4-HMAC-SHA256 Credential={}/20261201/us-east-1/sqs/aws4_request, SignedHeaders=host"
        self.assertEqual(
            awsiam.role_of({"Authorization": signed.format(awsiam.credentials("p-web")["AWS_ACCESS_KEY_ID"])}), "p-web"
        )
        self.assertIsNone(awsiam.role_of({"Authorization": signed.format("AKIAOPERATOR")}))
        self.assertIsNone(awsiam.role_of({}))


class WebRoleTest(unittest.TestCase):
    """The web role's policy as provisioning writes it, against the calls pool repair makes."""

    document = web_policy(CONFIG, ACCOUNT)

    def test_pool_repair_may_launch_a_tagged_member_of_the_configured_image_and_type_with_the_app_role(self):
        self.assertIsNone(allowed(self.document, "ec2", "RunInstances", run_instances()))
        self.assertIsNone(allowed(self.document, "ec2", "DescribeImages", {}))
        self.assertIsNone(allowed(self.document, "ec2", "DescribeInstanceTypes", {}))

    def test_any_other_image_type_tag_or_role_is_denied(self):
        table = [
            ({"ImageId": "ami-0other"}, ("ec2:RunInstances", f"arn:aws:ec2:{REGION}::image/ami-0other")),
            ({"InstanceType": "p5.48xlarge"}, ("ec2:RunInstances", f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*")),
            (
                {"TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "fr-prefix", "Value": "other"}]}]},
                ("ec2:RunInstances", f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*"),
            ),
            ({"IamInstanceProfile": {"Name": "someone-admin"}}, ("iam:PassRole", "*")),
        ]
        for override, denied in table:
            with self.subTest(override=override):
                self.assertEqual(allowed(self.document, "ec2", "RunInstances", run_instances(**override)), denied)

    def test_tags_only_as_part_of_a_launch(self):
        denied = allowed(
            self.document, "ec2", "CreateTags", {"Resources": ["i-0123"], "Tags": [{"Key": "fr-prefix", "Value": "iam"}]}
        )
        self.assertEqual(denied, ("ec2:CreateTags", f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-0123"))

    def test_the_role_passed_must_be_passed_to_ec2(self):
        statement = next(s for s in self.document["Statement"] if s["Action"] == ["iam:PassRole"])
        role = f"arn:aws:iam::{ACCOUNT}:role/iam-app"
        self.assertEqual(
            awsiam.decision([self.document], "iam:PassRole", role, {"iam:PassedToService": "lambda.amazonaws.com"}), "implicit"
        )
        self.assertEqual(statement["Condition"], {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}})

    def test_an_encrypted_root_volume_with_a_key_of_the_accounts_own_needs_that_key_through_ec2(self):
        key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0000"
        encrypted = run_instances(BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"Encrypted": True}}])
        wanted = awsiam.requested("ec2", "RunInstances", params(encrypted), (REGION, ACCOUNT), iam=FakeIam(), ebs_key=key)
        self.assertEqual([(a, r) for a, r, _ in wanted if a.startswith("kms:")], [(a, key) for a in awsiam.EBS_KEY_ACTIONS])
        self.assertEqual(
            awsiam.requested("ec2", "RunInstances", params(encrypted), (REGION, ACCOUNT), iam=FakeIam())[-1][0],
            "iam:PassRole",
            "an AWS managed key asks nothing of the caller",
        )
        document = web_policy(CONFIG, ACCOUNT, ebs_key=key)
        for iam_action, resource, context in wanted:
            with self.subTest(action=iam_action):
                self.assertEqual(awsiam.decision([document], iam_action, resource, context), "allow")
        self.assertEqual(awsiam.decision([document], "kms:Decrypt", key, {}), "implicit", "only through EC2")
        self.assertEqual(
            awsiam.decision([self.document], "kms:CreateGrant", key, {"kms:ViaService": f"ec2.{REGION}.amazonaws.com"}),
            "implicit",
        )

    def test_without_an_image_the_role_may_launch_nothing(self):
        document = web_policy(settings.load_config({"FR_PREFIX": "iam"}), ACCOUNT)
        self.assertEqual(
            allowed(document, "ec2", "RunInstances", run_instances(ImageId="")),
            ("ec2:RunInstances", f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/*"),
        )


class AppRoleTest(unittest.TestCase):
    """The app role's policy with AWS's AmazonSSMManagedInstanceCore (as moto ships it) beside it."""

    def test_session_manager_is_allowed_but_the_admin_key_is_not(self):
        import json

        from moto.iam import aws_managed_policies

        managed = json.loads(aws_managed_policies.aws_managed_policies_data)["AmazonSSMManagedInstanceCore"]["Document"]
        documents = [app_policy(CONFIG, ACCOUNT), managed]
        admin_key = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{CONFIG.admin_key_parameter}"
        cases = [
            ("ssmmessages:OpenDataChannel", "*", "allow"),  # a shell, through Session Manager
            ("ssm:UpdateInstanceInformation", f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-1", "allow"),  # the agent
            ("ssm:GetParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/someone/else", "allow"),
            ("ssm:GetParameter", admin_key, "deny"),
            ("ssm:GetParameters", admin_key, "deny"),
            ("sqs:ListQueueTags", f"arn:aws:sqs:{REGION}:{ACCOUNT}:{CONFIG.request_queue}", "allow"),  # the dead man's switch
            ("sqs:TagQueue", f"arn:aws:sqs:{REGION}:{ACCOUNT}:{CONFIG.request_queue}", "implicit"),  # the autoscaler's alone
        ]
        for action, resource, expected in cases:
            with self.subTest(action=action, resource=resource):
                self.assertEqual(awsiam.decision(documents, action, resource, {}), expected)


if __name__ == "__main__":
    unittest.main()
