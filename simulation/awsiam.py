"""IAM for the AWS-like stack (FR_SIMULATE=aws): each process of the local stack calls AWS as the
principal it would be on AWS, and every call a role makes is checked against that role's policies
as provisioning wrote them into moto. moto itself enforces none (its access-control mode checks
actions only, against resource "*", and evaluates no condition), so a call a role may not make
would pass every test here until the stack checks it.

Principals: a role's processes sign with `credentials(role)` (an access key naming the role, as an
instance profile's session credentials stand for it on AWS); any other key is the operator, the
account's administrator, allowed everything (provisioning, the local launcher, the tests' own
clients). Each call of a role is turned into what IAM evaluates for it (`requested`): one or more
(action, resource ARN, condition context), e.g. RunInstances into the instance, image, subnet,
network interface, security group and volume, ec2:CreateTags with ec2:CreateAction=RunInstances
for its tags, and iam:PassRole of the instance profile's role with iam:PassedToService. Each must
be allowed by a statement of the role's inline or attached policies (Action/NotAction,
Resource/NotResource, Condition) and denied by none: AWS's evaluation for one account with no
boundaries or SCPs. A denied call is answered as the service words it (EC2 UnauthorizedOperation,
S3 AccessDenied, SQS AccessDenied, DynamoDB AccessDeniedException) and journalled as
`AccessDenied`, so that tests can say no call was denied. A policy using a condition operator the
stack does not know is a denial that says so: teach it here before relying on it.
Sources: docs/local-stack.md ("IAM").
"""

import fnmatch
import json
import re
from urllib.parse import unquote, urlsplit

# An access key id naming a role: "ASIA" is the prefix of AWS's temporary (session) keys.
ROLE_KEY = "ASIA.{role}"
_ROLE_KEY = re.compile(r"Credential=ASIA\.([\w+=,.@-]+?)/")
SESSION = "local"
# IAM's names of the service prefixes, where moto's service name differs.
PREFIXES = {"service-quotas": "servicequotas"}
# SQS batch calls are authorized as their single-message action.
SQS_BATCH = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}
# moto's S3 action names -> IAM's.
S3_ACTIONS = {"HeadBucket": "ListBucket", "PutPublicAccessBlock": "PutBucketPublicAccessBlock"}
# EC2 calls that name instances, authorized on each instance named.
EC2_INSTANCE_ACTIONS = (
    "StartInstances",
    "StopInstances",
    "TerminateInstances",
    "RebootInstances",
    "ModifyInstanceAttribute",
    "GetConsoleOutput",
)
EC2_RESOURCE_TYPES = {
    "i-": "instance",
    "vol-": "volume",
    "ami-": "image",
    "snap-": "snapshot",
    "sg-": "security-group",
    "eni-": "network-interface",
    "subnet-": "subnet",
}
# The error code of a denial, by service (AccessDenied elsewhere).
DENIED_CODES = {"ec2": "UnauthorizedOperation", "dynamodb": "AccessDeniedException"}
# The key the local launcher signs a guest's power-off with (guest_shutdown): no principal of IAM's.
GUEST_KEY = "GUEST"
_GUEST_KEY = re.compile(rf"Credential={GUEST_KEY}/")
# Calls IAM never denies.
ALWAYS = {"sts:GetCallerIdentity"}


def credentials(role):
    """The environment of a process that calls AWS as `role` (on AWS: its instance profile)."""
    return {"AWS_ACCESS_KEY_ID": ROLE_KEY.format(role=role), "AWS_SECRET_ACCESS_KEY": "local", "AWS_SESSION_TOKEN": "local"}


def guest_shutdown(ec2_endpoint, region, instance_id):
    """As the OS of `instance_id` powering off does (an instance-initiated shutdown): EC2 acts on
    its instance's InstanceInitiatedShutdownBehavior, no API call and no IAM. Sent as a
    StopInstances signed with GUEST_KEY, which the AWS-like stack takes for the guest's (any
    other moto: a plain stop)."""
    import boto3

    session = boto3.session.Session(aws_access_key_id=GUEST_KEY, aws_secret_access_key="local", region_name=region)
    session.client("ec2", endpoint_url=ec2_endpoint).stop_instances(InstanceIds=[instance_id])


def is_guest(headers):
    """Whether a request is a guest's power-off (guest_shutdown)."""
    return bool(_GUEST_KEY.search(headers.get("Authorization", "") or ""))


def role_of(headers):
    """The role a request is signed as, or None (the operator)."""
    found = _ROLE_KEY.search(headers.get("Authorization", "") or "")
    return found[1] if found else None


# Policy evaluation: pure functions of documents and a request context.


def _listed(value):
    return value if isinstance(value, list) else [value]


def _glob(pattern, value, ignore_case=False):
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    return fnmatch.fnmatchcase(value, pattern)


def _string(op, wanted, got):
    if op == "StringEquals":
        return got == wanted
    if op == "StringEqualsIgnoreCase":
        return got.lower() == wanted.lower()
    if op in ("StringLike", "ArnLike", "ArnEquals"):  # ArnEquals takes wildcards too, as ArnLike does
        return _glob(wanted, got)
    if op == "Bool":
        return got.lower() == wanted.lower()
    raise UnknownCondition(op)


NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
}


class UnknownCondition(Exception):
    """A condition operator this stack cannot evaluate."""


def condition_holds(operator, key, wanted, context):
    """One condition key test, as IAM evaluates it: keys case-insensitive; each of the request's
    values holds when it matches one of the wanted values (a negated operator: none of them);
    ForAllValues wants every value to hold, ForAnyValue (and a plain, single-valued key) one. A key
    absent from the request: ForAllValues holds, ForAnyValue does not, a plain test holds only
    negated (and any ...IfExists holds)."""
    got = context.get(key.lower())
    qualifier, _, op = operator.rpartition(":")
    if_exists = op.endswith("IfExists")
    op = op.removesuffix("IfExists")
    if got is None:
        return if_exists or (qualifier == "ForAllValues" if qualifier else op in NEGATED)
    negated = op in NEGATED
    base = NEGATED.get(op, op)
    holds = [any(_string(base, str(w), str(v)) for w in _listed(wanted)) != negated for v in _listed(got)]
    return all(holds) if qualifier == "ForAllValues" else any(holds)


def statement_applies(statement, action, resource, context):
    """True when `statement` covers the action on the resource and its conditions hold."""
    if "Action" in statement:
        if not any(_glob(p, action, ignore_case=True) for p in _listed(statement["Action"])):
            return False
    elif any(_glob(p, action, ignore_case=True) for p in _listed(statement.get("NotAction", []))):
        return False
    if "Resource" in statement:
        if not any(_glob(p, resource) for p in _listed(statement["Resource"])):
            return False
    elif any(_glob(p, resource) for p in _listed(statement.get("NotResource", []))):
        return False
    return all(
        condition_holds(op, key, wanted, context)
        for op, tests in statement.get("Condition", {}).items()
        for key, wanted in tests.items()
    )


def decision(documents, action, resource, context):
    """ "allow", "deny" (an explicit Deny) or "implicit" (no statement allows it) for one request."""
    context = {k.lower(): v for k, v in context.items()}
    statements = [s for document in documents for s in _listed(document.get("Statement", []))]
    applying = [s for s in statements if statement_applies(s, action, resource, context)]
    if any(s["Effect"] == "Deny" for s in applying):
        return "deny"
    return "allow" if any(s["Effect"] == "Allow" for s in applying) else "implicit"


# What IAM evaluates for a call: (action, resource ARN, context) triples.


def _tag_context(kind, tags):
    """aws:RequestTag/* (with aws:TagKeys, the keys requested) or aws:ResourceTag/* of `tags`."""
    context = {f"aws:{kind}/{k}": v for k, v in tags.items()}
    if kind == "RequestTag":
        context["aws:TagKeys"] = list(tags)
    return context


def requested(service, action, params, where, ec2=None, iam=None, s3_resource=None, ebs_key=None):
    """What IAM checks for one call. `params`: the call's parameters (get(name, default)); `where`:
    (region, account); `ec2`/`iam`: moto's backends, to read instances' tags and instance
    profiles' roles; `s3_resource`: the ARN moto's S3 computed; `ebs_key`: the ARN of the account's
    default EBS key when it is a key of its own (an AWS managed one needs no permission of the caller)."""
    region, account = where
    prefix = PREFIXES.get(service, service)
    if service == "s3":
        return [(f"s3:{S3_ACTIONS.get(action, action)}", s3_resource, {})]
    if service == "sqs":
        url = params("QueueUrl")
        name = urlsplit(url).path.rsplit("/", 1)[-1] if url else params("QueueName")
        return [(f"sqs:{SQS_BATCH.get(action, action)}", f"arn:aws:sqs:{region}:{account}:{name}" if name else "*", {})]
    if service == "dynamodb":
        tables = [params("TableName")] if params("TableName") else list((params("RequestItems") or {}).keys())
        return [(f"dynamodb:{action}", f"arn:aws:dynamodb:{region}:{account}:table/{t}", {}) for t in tables or ["*"]]
    if service == "ec2":
        return _ec2(action, params, region, account, ec2, iam, ebs_key)
    if service == "cloudwatch" and action == "PutMetricData":
        return [("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": params("Namespace")})]
    if service == "ssm" and params("Name"):
        # A parameter's ARN has its name after "parameter", with the name's own leading slash.
        name = params("Name")
        return [(f"ssm:{action}", f"arn:aws:ssm:{region}:{account}:parameter{'' if name.startswith('/') else '/'}{name}", {})]
    return [(f"{prefix}:{action}", "*", {})]


def _ec2(action, params, region, account, ec2, iam, ebs_key=None):
    arn = f"arn:aws:ec2:{region}:{account}"
    if action in EC2_INSTANCE_ACTIONS:
        return [(f"ec2:{action}", f"{arn}:instance/{i}", _instance_context(ec2, i)) for i in params("InstanceIds", [])]
    if action == "CreateTags":
        tags = {t["Key"]: t["Value"] for t in params("Tags", [])}
        return [
            ("ec2:CreateTags", _ec2_arn(arn, region, r), {**_instance_context(ec2, r), **_tag_context("RequestTag", tags)})
            for r in params("Resources", [])
        ]
    if action == "RunInstances":
        by_default = ec2 is not None and ec2.get_ebs_encryption_by_default()
        return _run_instances(params, region, arn, ec2, iam) + _volume_key(params, region, ebs_key, by_default)
    return [(f"ec2:{action}", "*", {})]


def _ec2_arn(arn, region, resource_id):
    kind = next((k for p, k in EC2_RESOURCE_TYPES.items() if resource_id.startswith(p)), "resource")
    if kind == "image":
        return f"arn:aws:ec2:{region}::image/{resource_id}"
    return f"{arn}:{kind}/{resource_id}"


def _instance_context(ec2, instance_id):
    """aws:ResourceTag/* and ec2:InstanceType of an existing instance ({} for any other id)."""
    try:
        instance = ec2.get_instance(instance_id)
    except Exception:  # noqa: BLE001 (moto's InvalidInstanceID.NotFound: the call itself says so)
        return {}
    return {**_tag_context("ResourceTag", dict(ec2.tags.get(instance_id, {}))), "ec2:InstanceType": instance.instance_type}


def _run_instances(params, region, arn, ec2, iam):
    """RunInstances' resources (EC2 user guide, "Launch instances (RunInstances)"), its tags'
    CreateTags, and the instance profile's iam:PassRole."""
    specs = {}
    for spec in params("TagSpecifications", []):
        specs.setdefault(spec["ResourceType"], {}).update({t["Key"]: t["Value"] for t in spec.get("Tags", [])})
    profile = params("IamInstanceProfile") or {}
    instance = {"ec2:InstanceType": params("InstanceType", "m1.small"), **_tag_context("RequestTag", specs.get("instance", {}))}
    if profile:
        instance["ec2:InstanceProfile"] = _profile_arn(iam, profile)
    groups = params("SecurityGroupIds", []) or ["*"]
    wanted = [
        ("ec2:RunInstances", f"{arn}:instance/*", instance),
        ("ec2:RunInstances", f"arn:aws:ec2:{region}::image/{params('ImageId')}", {}),
        ("ec2:RunInstances", f"{arn}:subnet/{params('SubnetId') or '*'}", {}),
        ("ec2:RunInstances", f"{arn}:network-interface/*", {}),
        *(("ec2:RunInstances", f"{arn}:security-group/{g}", {}) for g in groups),
        ("ec2:RunInstances", f"{arn}:volume/*", {}),
    ]
    if params("KeyName"):
        wanted.append(("ec2:RunInstances", f"{arn}:key-pair/{params('KeyName')}", {}))
    for kind, tags in specs.items():
        wanted.append(
            ("ec2:CreateTags", f"{arn}:{kind}/*", {"ec2:CreateAction": "RunInstances", **_tag_context("RequestTag", tags)})
        )
    if profile:
        role = _profile_role(iam, profile)
        wanted.append(("iam:PassRole", role or "*", {"iam:PassedToService": "ec2.amazonaws.com"}))
    return wanted


# What a caller needs of a customer managed key to launch a volume encrypted with it (EBS user guide,
# "Amazon EBS encryption": the key's permissions for the principal launching the instance).
EBS_KEY_ACTIONS = ("kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext")


def _volume_key(params, region, ebs_key, by_default=False):
    """The KMS permissions a launch of an encrypted volume with the account's default key needs (every
    volume is encrypted when the account's EBS encryption by default is on)."""
    encrypted = by_default or [
        m
        for m in params("BlockDeviceMappings", []) or []
        if str((m.get("Ebs") or {}).get("Encrypted", "")).lower() == "true" and not m["Ebs"].get("KmsKeyId")
    ]
    if not encrypted or not ebs_key:
        return []
    return [(action, ebs_key, {"kms:ViaService": f"ec2.{region}.amazonaws.com"}) for action in EBS_KEY_ACTIONS]


def aws_managed_ebs_key(ec2):
    """Mark moto's alias/aws/ebs key as AWS managed (moto makes it a customer key)."""
    from moto.kms import kms_backends

    kms = kms_backends[ec2.account_id][ec2.region_name]
    if kms.alias_exists("alias/aws/ebs"):
        kms.describe_key("alias/aws/ebs").key_manager = "AWS"


def customer_ebs_key(ec2):
    """The ARN of the account's default EBS key if it is a key of the account's own, else None."""
    from moto.kms import kms_backends

    arn = ec2.default_kms_key_id
    if not arn:
        return None
    kms = kms_backends[ec2.account_id][ec2.region_name]
    return None if kms.describe_key(arn).key_manager == "AWS" else arn


def _profile(iam, profile):
    if iam is None:
        return None
    try:
        if profile.get("Arn"):
            return iam.get_instance_profile_by_arn(profile["Arn"])
        return iam.get_instance_profile(profile["Name"])
    except Exception:  # noqa: BLE001 (moto's NotFound: RunInstances itself refuses the name)
        return None


def _profile_arn(iam, profile):
    found = _profile(iam, profile)
    return found.arn if found is not None else profile.get("Arn", "")


def _profile_role(iam, profile):
    found = _profile(iam, profile)
    return found.roles[0].arn if found is not None and found.roles else None


def role_documents(iam, role_name):
    """The policy documents of a role in moto's IAM backend (inline and attached), or None when
    there is no such role."""
    try:
        role = iam.get_role(role_name)
    except Exception:  # noqa: BLE001 (moto's NoSuchEntity)
        return None
    documents = [json.loads(unquote(d) if isinstance(d, str) and d.startswith("%7B") else d) for d in role.policies.values()]
    for policy in role.managed_policies.values():
        version = next(v for v in policy.versions if v.is_default)
        documents.append(json.loads(version.document) if isinstance(version.document, str) else version.document)
    return documents


# Hooking moto: its two authorization entry points (every non-S3 call, every S3 call).


def install(sim):
    """Check every call of a role (moto's ActionAuthenticatorMixin, which moto calls for each)."""
    from moto.core.responses import ActionAuthenticatorMixin

    def normal(self, resource="*"):
        _check(self, sim, self.service_name, self._get_action())

    def s3(self, bucket_name=None, key_name=None):
        action = self.data.get("Action", "ListAllMyBuckets")
        _check_owner(self, sim, bucket_name, action)
        if action == "DeleteObject" and not key_name:
            # DeleteObjects (a POST to the bucket): s3:DeleteObject on each key it names. AWS answers
            # a denied key in the response's Errors; here the whole call is refused (stricter).
            for key in deleted_keys(self.body):
                _check(self, sim, "s3", action, f"arn:aws:s3:::{bucket_name}/{key}")
            return
        target = f"{bucket_name or '*'}/{key_name}" if key_name else (bucket_name or "*")
        _check(self, sim, "s3", action, f"arn:aws:s3:::{target}")

    ActionAuthenticatorMixin._authenticate_and_authorize_normal_action = normal
    ActionAuthenticatorMixin._authenticate_and_authorize_s3_action = s3


def deleted_keys(body):
    """The keys a DeleteObjects request body names."""
    import xml.etree.ElementTree as ElementTree

    return [
        element.text or ""
        for element in ElementTree.fromstring(body).iter()
        if element.tag.endswith("}Key") or element.tag == "Key"
    ]


def _check_owner(response, sim, bucket, action):
    """A bucket of another account: this account's principals, the operator too, have no access
    (no bucket policy of its owner grants any); CreateBucket is refused by S3 itself (the name)."""
    from moto.s3.models import s3_backends

    owner = s3_backends.bucket_accounts.get(bucket) if bucket else None
    if owner is None or owner[1] == response.current_account or action == "CreateBucket":
        return
    principal = f"arn:aws:iam::{response.current_account}:root"
    sim.record(
        "AccessDenied",
        [],
        principal=principal,
        call=f"s3:{S3_ACTIONS.get(action, action)}",
        resource=f"arn:aws:s3:::{bucket}",
        reason="the bucket belongs to another account",
    )
    raise _denied(response, "s3", principal, f"s3:{action}", f"arn:aws:s3:::{bucket}", "the bucket is another account's")


def _check(response, sim, service, action, s3_resource=None):
    if is_guest(response.headers) and (service, action) != ("ec2", "StopInstances"):
        sim.record("AccessDenied", [], principal=GUEST_KEY, call=f"{service}:{action}", reason="a guest powers off, nothing more")
        raise _denied(response, service, GUEST_KEY, f"{service}:{action}", "*", "the guest's key is for its power-off only")
    role = role_of(response.headers)
    if role is None:
        return
    from moto.ec2.models import ec2_backends
    from moto.iam.models import iam_backends

    account, region = response.current_account, response.region
    iam = iam_backends[account]["aws"]
    principal = f"arn:aws:sts::{account}:assumed-role/{role}/{SESSION}"
    documents = role_documents(iam, role)
    if documents is None:
        sim.record("AccessDenied", [], principal=principal, call=f"{service}:{action}", reason="no such role")
        raise _denied(response, service, principal, f"{service}:{action}", "*", "the role does not exist")
    ec2 = ec2_backends[account][region] if service == "ec2" else None
    if ec2 is not None:
        aws_managed_ebs_key(ec2)
    wanted = requested(
        service,
        action,
        lambda name, default=None: response._get_param(name, default),
        (region, account),
        ec2=ec2,
        iam=iam,
        s3_resource=s3_resource,
        ebs_key=customer_ebs_key(ec2) if ec2 is not None else None,
    )
    for iam_action, resource, context in wanted:
        if iam_action in ALWAYS:
            continue
        try:
            verdict = decision(documents, iam_action, resource, context)
            why = {"deny": "an explicit deny", "implicit": "no identity-based policy allows it"}.get(verdict)
        except UnknownCondition as e:
            verdict, why = "unknown", f"the AWS-like stack cannot evaluate condition operator {e}"
        if verdict != "allow":
            sim.record("AccessDenied", [], principal=principal, call=iam_action, resource=resource, reason=why)
            raise _denied(response, service, principal, iam_action, resource, why)


def _denial(code, message):
    """A moto ServiceException of this module (moto serializes it in the protocol of the service
    called: its own exceptions would name theirs)."""
    from moto.core.exceptions import ServiceException

    class Denied(ServiceException):
        pass

    return Denied(code, message)


def _denied(response, service, principal, action, resource, why):
    """The refusal as the service words it: its code, in its protocol's body (moto's serializer),
    with AWS's status; raised where moto turns an HTTPException into the response."""
    from moto.core.exceptions import _RESTError
    from moto.core.responses import ActionResult

    message = f"User: {principal} is not authorized to perform: {action} on resource: {resource} because {why}"
    code = DENIED_CODES.get(service, "AccessDenied")
    if service == "ec2":
        message = f"You are not authorized to perform this operation. {message}"
    _, headers, body = response.serialized(ActionResult(_denial(code, message)))
    if service == "sqs" and "json" in headers.get("Content-Type", ""):
        # SQS's JSON protocol: botocore reads the query-compatible code from this header.
        headers["x-amzn-query-error"] = "AccessDenied;Sender"
    response.response_headers.update(headers)
    refusal = _RESTError(code, message)
    refusal.code = 400 if service == "dynamodb" else 403
    refusal.description, refusal.content_type = body, headers.get("Content-Type", refusal.content_type)
    return refusal
