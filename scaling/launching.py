"""Launching the app tier's pool members: RunInstances with a ClientToken per member (EC2 answers a
repeated launch with the instance it made), the arguments every member is launched with (its image,
type, security group, user data, a root volume sized for hibernation), and pool repair.

EC2 refuses an instance profile IAM has not yet propagated ("Invalid IAM Instance Profile name")
for seconds to minutes after it is made: a launch is retried within a bounded patience."""

import math
import time
import uuid

import common
from core import cloud, settings, statefiles
from scaling import pool

log = common.EventLog("pool")

# A member launched for hibernation: its root volume (the image's root device, encrypted with the
# account's default EBS key) holds the image's system and the agent's swap file, which is the larger
# of the RAM and 4000 MB (hibinit-config.cfg: percentage-of-ram = 100, target-size-mb = 4000), and
# a GiB of room. Amazon Linux 2023's device and system size when the image cannot be described.
ROOT_DEVICE = "/dev/xvda"
IMAGE_GB = 8
AGENT_SWAP_MIB = 4000

# A ClientToken is reused for a member's launch until the member is seen, at most this long.
LAUNCH_TOKEN_SECONDS = 600


def profile_not_ready(error):
    """True for RunInstances' refusal of an instance profile IAM has not yet propagated."""
    return cloud.error_code(error) == "InvalidParameterValue" and "iamInstanceProfile" in error.response.get("Error", {}).get(
        "Message", ""
    )


def run_instance(ec2, patience=0.0, **arguments):
    """RunInstances for one instance, made again while its instance profile is not yet usable, for
    up to `patience` seconds (IAM is eventually consistent); its id."""
    return cloud.while_refused(
        lambda: ec2.run_instances(MinCount=1, MaxCount=1, **arguments)["Instances"][0]["InstanceId"],
        profile_not_ready,
        patience,
        lambda error, pause: log.info("profile_not_ready", retry_in=round(pause, 1)),
    )


class Launches:
    """The launches of a process, each made at most once: a member missing from a describe is
    launched with the ClientToken of its earlier launch while that one may still be unseen (EC2
    answers with the instance it made then), and with a new token once it was seen (its next
    generation: the member was terminated since). With `config` (the autoscaler's) the tokens are
    kept in FR_STATE_DIR/launches.json and outlive the process, so that an autoscaler restarted
    moments after a launch does not launch the member again under a new token (the name twice);
    kept best-effort (a full disk: this process still remembers them)."""

    def __init__(self, config=None):
        self.config = config
        kept = statefiles.read_state(config, statefiles.LAUNCHES) if config else None
        tokens = kept.get("tokens") if isinstance(kept, dict) else None
        self.tokens = {  # member name -> (ClientToken, time.time() it was made)
            name: (made[0], made[1])
            for name, made in (tokens.items() if isinstance(tokens, dict) else ())
            if isinstance(made, list) and len(made) == 2 and isinstance(made[1], (int, float))
        }

    def token(self, name, fresh=False):
        token, made = self.tokens.get(name, (None, -math.inf))
        if fresh or time.time() - made > LAUNCH_TOKEN_SECONDS:
            token, made = f"{name}-{uuid.uuid4().hex}", time.time()
            self.tokens[name] = (token, made)
            self._keep()
        return token

    def seen(self, members):
        names = {member["name"] for member in members} & set(self.tokens)
        for name in names:
            del self.tokens[name]
        if names:
            self._keep()

    def _keep(self):
        if self.config is None:
            return
        try:
            statefiles.write_state(self.config, statefiles.LAUNCHES, tokens=self.tokens)
        except OSError as e:
            log.warning("launches_not_kept", error=e)


def repair(ec2, config, members, patience=0.0, launches=None):
    """Launch the members missing from `members` (pool.describe), at most as many as may run beside
    its active ones (they start `pending` and run: whoever owns the pool's states stops them once
    they run; the rest follow on a later call); {name: instance id} of those launched. `patience`: see
    run_instance; `launches`: the process's Launches (a call without one cannot know of earlier
    launches not yet visible)."""
    launches = launches or Launches()
    launches.seen(members)
    names = pool.missing(members, config.pool_size)
    if not names:
        return {}
    if not config.ami_id:
        log.error("pool_incomplete", missing=len(names), detail="FR_AMI_ID is not set: cannot create instances")
        return {}
    room = config.max_instances - sum(i["state"] in pool.ACTIVE_STATES for i in members)
    try:
        arguments = launch_arguments(ec2, config)
    except NoSecurityGroup as e:
        log.error("pool_incomplete", missing=len(names), detail=str(e))
        return {}
    launched = {}
    for name in names[: max(room, 0)]:
        launched[name] = launch(
            ec2,
            launches,
            name,
            patience,
            **arguments,
            TagSpecifications=[{"ResourceType": "instance", "Tags": pool.tags(config, name)}],
        )
    if launched:
        log.info("pool_repaired", launched=",".join(launched), waiting=len(names) - len(launched))
    return launched


def launch(ec2, launches, name, patience, **arguments):
    """RunInstances of member `name`, idempotent (its ClientToken); its instance id."""
    from botocore.exceptions import ClientError

    try:
        return run_instance(ec2, patience, ClientToken=launches.token(name), **arguments)
    except ClientError as e:
        # The earlier launch of this token ended terminated before it was ever seen: a new one.
        if cloud.error_code(e) != "IdempotentInstanceTerminated":
            raise
        return run_instance(ec2, patience, ClientToken=launches.token(name, fresh=True), **arguments)


def launch_arguments(ec2, config):
    """RunInstances' arguments for a member (but its tags): for hibernation with FR_HIBERNATE."""
    arguments = dict(
        ImageId=config.ami_id,
        InstanceType=config.instance_type,
        IamInstanceProfile={"Name": config.role("app")},
        UserData=member_user_data(config),
        SecurityGroupIds=[app_security_group(ec2, config)],
        # The dead man's switch powers a member off (core/heartbeat.py): stopped, a member still.
        InstanceInitiatedShutdownBehavior="stop",
    )
    if config.hibernate:
        device, size = root_volume(ec2, config)
        arguments.update(
            HibernationOptions={"Configured": True},
            BlockDeviceMappings=[
                {
                    "DeviceName": device,
                    "Ebs": {"Encrypted": True, "VolumeSize": size, "VolumeType": "gp3", "DeleteOnTermination": True},
                }
            ],
        )
    return arguments


def app_security_group_name(config):
    return f"{config.prefix}-app"


class NoSecurityGroup(Exception):
    """The app tier's security group is missing: provisioning makes it."""


def app_security_group(ec2, config):
    """The id of the members' security group (made by provisioning; never the VPC's default group)."""
    name = app_security_group_name(config)
    found = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]}])["SecurityGroups"]
    if not found:
        raise NoSecurityGroup(f"security group {name} is missing: run ./setup.sh provision")
    return found[0]["GroupId"]


# Where a member's first boot writes the pool's settings (systemd/face-.service.d/common.conf reads it
# after the image's /etc/face-recognition.env).
POOL_SETTINGS = "/etc/face-recognition-pool.env"
# The CloudWatch agent's configuration on a member, and its control (deploy/logs.py; setup.sh installs them).
AGENT_CONFIG = "/opt/aws/amazon-cloudwatch-agent/etc/face-rec.json"
AGENT_CTL = "/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl"
# The app tier's service on a member (systemd/face-worker.service).
WORKER_UNIT = "face-worker.service"


def member_user_data(config, settings_path=POOL_SETTINGS):
    """A member's user data (cloud-init runs it at the instance's first boot): the pool's FR_PREFIX and
    FR_REGION, over whatever the image was set up with, so that a member never looks for another
    deployment's queues, and the web tier's FR_REQUEST_TIMEOUT (for a request from a web tier that
    sends no deadline, one older than it is one nobody waits for: the worker acknowledges it
    unanswered), and FR_IDLE_STOP (core/heartbeat.py). cloud-init runs it late in the boot, after the
    worker has started with the image's settings: the worker is restarted once they are in place
    (try-restart: only if it runs)."""
    pool_settings = settings.environment_text(
        {
            "FR_PREFIX": config.prefix,
            "FR_REGION": config.region,
            "FR_REQUEST_TIMEOUT": f"{config.request_timeout:g}",
            "FR_IDLE_STOP": f"{config.idle_stop:g}",
        }
    )
    return (
        f"#!/bin/bash\nset -e\ncat > {settings_path} <<'ENV'\n{pool_settings}ENV\n"
        f"chmod 0644 {settings_path}\nsystemctl try-restart {WORKER_UNIT}\n"
        # The CloudWatch agent ships to the pool's log group, not the image's (deploy/logs.py).
        f"if [ -x {AGENT_CTL} ]; then\n"
        f"  (cd /opt/face-rec/app && /opt/face-rec/venv/bin/python -m deploy.logs agent-config app"
        f" /etc/face-recognition.env {settings_path} > {AGENT_CONFIG})\n"
        f"  {AGENT_CTL} -a fetch-config -m ec2 -s -c file:{AGENT_CONFIG}\nfi\n"
    )


def root_volume(ec2, config):
    """(device name, GiB) of a member's root volume for hibernation: the image's root snapshot
    (RunInstances refuses a smaller volume) plus the agent's swap file and a GiB of room."""
    from botocore.exceptions import ClientError

    device, image_gb = ROOT_DEVICE, IMAGE_GB
    try:
        images = ec2.describe_images(ImageIds=[config.ami_id])["Images"]
    except ClientError as e:  # the local stack's placeholder image: Amazon Linux 2023's sizes
        if cloud.error_code(e) != "InvalidAMIID.NotFound":
            raise
        log.info("image_not_described", image=config.ami_id, error=cloud.error_code(e))
        images = []
    for image in images:
        device = image.get("RootDeviceName", device)
        image_gb = next(
            (
                m["Ebs"]["VolumeSize"]
                for m in image.get("BlockDeviceMappings", [])
                if m.get("DeviceName") == device and "VolumeSize" in m.get("Ebs", {})
            ),
            image_gb,
        )
    ram_mib = ec2.describe_instance_types(InstanceTypes=[config.instance_type])["InstanceTypes"][0]["MemoryInfo"]["SizeInMiB"]
    return device, image_gb + math.ceil(max(ram_mib, AGENT_SWAP_MIB) / 1024) + 1
