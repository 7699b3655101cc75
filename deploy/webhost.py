"""The web host: its security group, address and instance; the code and settings it fetches from
the deploy bucket; the script its user data runs at first boot and Run Command runs at each update."""

import math
import subprocess

from core import cloud, settings
from deploy.base import INSTANCE_PATIENCE, PROFILE_PATIENCE, WEB_PORT, ProvisionError, refused_with
from scaling import launching, pool

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
    # Provisioning's alone (deploy/alarms.py).
    "FR_ALARM_EMAIL",
    "FR_BUDGET_USD",
    "FR_TORCH_THREADS",
    # The key is in SSM, never in the settings object (FR_ADMIN_TOKEN_PARAMETER names it).
    *settings.SECRETS,
)

# Systems Manager's document that runs a shell script on an instance (its agent is part of AL2023).
RUN_SHELL = "AWS-RunShellScript"
# How long a web host just started may take before its SSM agent takes commands.
AGENT_PATIENCE = 300
# How long an update of the web host (setup.sh web: dnf, pip) may take, asked every UPDATE_POLL s.
UPDATE_PATIENCE = 1800
UPDATE_POLL = 2
STILL_RUNNING = ("Pending", "InProgress", "Delayed")
AL2023_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"


def web_host_settings(config):
    """The web host's /etc/face-recognition.env: every FR_* variable but NOT_FOR_THE_WEB_HOST, with
    this run's values, the host's own address, and where its web tier reads the admin key."""
    names = [n for n in settings.variables() if n not in NOT_FOR_THE_WEB_HOST]
    return settings.environment_text(
        {"FR_HOST": "0.0.0.0", **settings.environment(config, names), "FR_ADMIN_TOKEN_PARAMETER": config.admin_key_parameter}
    )


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


class WebHostSteps:
    """Provisioner's steps for the web host."""

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
            instance = launching.run_instance(
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
            # The output as Run Command keeps it (its first 8,000 characters): its last line.
            errors = e.last_response.get("StandardErrorContent", "").strip().splitlines()
            ended = f"has not ended within {UPDATE_PATIENCE} s" if status in STILL_RUNNING else f"ended {status}"
            raise ProvisionError(
                f"{where}: the update {ended}" + (f": {errors[-1]}" if errors else "") + "; its services may be "
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
