"""What a deployment checks of the account before it makes anything: its default VPC, its vCPU
quota, its default EBS key."""

from core import settings
from deploy.base import ProvisionError, _tagged
from scaling import pool

# Service Quotas: "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", in vCPUs.
VCPU_QUOTA = "L-1216C47A"


class AccountSteps:
    """Provisioner's checks of the account, and the facts it reads from it."""

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

    def ensure_default_vpc(self):
        """The pool and the web host are launched into the region's default VPC: say so at once
        when there is none (RunInstances would refuse every launch, half-way through)."""
        if not self.ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]:
            raise ProvisionError(
                f"config error: no default VPC in {self.config.region}: the instances are launched "
                "into it (make one with 'aws ec2 create-default-vpc', or use another FR_REGION)"
            )
        return "exists"
