"""The account's other services as the AWS-like stack has them: security groups, instance profiles,
quotas, S3 buckets, Run Command."""

import json
import time

from simulation.awslike.sim import EC2_STANDARD_VCPUS, INVOCATIONS_DIR, VCPU_QUOTA_CODE


def install_account(sim):
    """A security group in use by an instance not yet terminated, IAM's propagation of instance
    profiles, and the vCPU quota."""
    from moto.ec2.exceptions import DependencyViolationError
    from moto.ec2.models.security_groups import SecurityGroupBackend
    from moto.iam.models import IAMBackend
    from moto.servicequotas.models import ServiceQuotasBackend

    delete_group, quota_getter = SecurityGroupBackend.delete_security_group, ServiceQuotasBackend.get_service_quota

    def delete_security_group(self, name=None, group_id=None):
        group = self.get_security_group_by_name_or_id(group_id or name)
        users = [
            i.id
            for i in self.all_instances()
            if i._state.name != "terminated" and group is not None and group.id in [g.id for g in i.security_groups]
        ]
        if users:
            raise DependencyViolationError(f"resource {group.id} has a dependent object")
        return delete_group(self, name=name, group_id=group_id)

    def profile_changed(method):
        def patched(self, profile_name, *args, **kwargs):
            result = method(self, profile_name, *args, **kwargs)
            sim.profiles_changed[profile_name] = time.monotonic()
            return result

        return patched

    def get_service_quota(self, service_code, quota_code):
        if (service_code, quota_code) == ("ec2", VCPU_QUOTA_CODE):
            return {
                "ServiceCode": "ec2",
                "QuotaCode": quota_code,
                "Value": EC2_STANDARD_VCPUS,
                "Unit": "None",
                "QuotaName": "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
            }
        return quota_getter(self, service_code, quota_code)

    SecurityGroupBackend.delete_security_group = delete_security_group
    IAMBackend.create_instance_profile = profile_changed(IAMBackend.create_instance_profile)
    IAMBackend.add_role_to_instance_profile = profile_changed(IAMBackend.add_role_to_instance_profile)
    ServiceQuotasBackend.get_service_quota = get_service_quota


def install_s3(sim):
    """A bucket name just deleted is not free at once."""
    from moto.s3.exceptions import S3ClientError
    from moto.s3.models import S3Backend

    create_bucket, delete_bucket = S3Backend.create_bucket, S3Backend.delete_bucket

    def patched_create_bucket(self, bucket_name, *args, **kwargs):
        deleted = sim.buckets_deleted.get(bucket_name)
        if deleted is not None and time.monotonic() - deleted < sim.t["bucket_name_reuse"]:
            sim.record(
                "CreateBucket", [], refused=f"{bucket_name} deleted {time.monotonic() - deleted:.2f} s ago", bucket=bucket_name
            )
            raise S3ClientError(
                "OperationAborted",
                "A conflicting conditional operation is currently in progress against this resource. Please try again.",
            )
        return create_bucket(self, bucket_name, *args, **kwargs)

    def patched_delete_bucket(self, bucket_name):
        deleted = delete_bucket(self, bucket_name)
        if deleted is not None:
            sim.buckets_deleted[bucket_name] = time.monotonic()
        return deleted

    S3Backend.create_bucket = patched_create_bucket
    S3Backend.delete_bucket = patched_delete_bucket


def serve_as_agent(state_dir, name):
    """Mark the instances named `name` (their Name tag) as those whose Run Commands the local stack
    runs and reports."""
    path = state_dir / INVOCATIONS_DIR / f"{name}.agent"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def report_invocation(state_dir, command_id, status, error=""):
    """As an instance's SSM agent reports a Run Command's end: `status` (Success, Failed) and the
    end of its standard error."""
    path = state_dir / INVOCATIONS_DIR / command_id
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"status": status, "error": error}))


def instance_name(command, instance_id):
    """The Name tag of the instance a Run Command was sent to ("" if it has none)."""
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[command.account_id][command.backend_region]
    tags = backend.describe_tags(filters={"resource-id": [instance_id]})
    return next((t["value"] for t in tags if t["key"] == "Name"), "")


def install_ssm(sim):
    from moto.core.utils import utcnow
    from moto.ssm.exceptions import SSMException
    from moto.ssm.models import Command

    original = Command.get_invocation

    def get_invocation(self, instance_id, plugin_name):
        invocation = original(self, instance_id, plugin_name)
        age = (utcnow() - self.requested_date_time).total_seconds()
        if age < sim.t["invocation_lag"]:
            raise SSMException("InvocationDoesNotExist", "An error occurred (InvocationDoesNotExist)")
        reports = sim.state_dir / INVOCATIONS_DIR
        try:
            outcome = json.loads((reports / self.command_id).read_text())
        except FileNotFoundError:
            served = (reports / f"{instance_name(self, instance_id)}.agent").exists()
            outcome = {"status": "InProgress" if served else "Success", "error": ""}
        return dict(
            invocation,
            Status=outcome["status"],
            StatusDetails=outcome["status"],
            StandardErrorContent=outcome["error"],
            ResponseCode={"Success": 0, "InProgress": -1}.get(outcome["status"], 1),
        )

    Command.get_invocation = get_invocation
