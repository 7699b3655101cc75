"""The app-tier pool: FR_MAX_INSTANCES EC2 instances named app-tier-instance-1 ... -N, tagged
fr-prefix=FR_PREFIX, made once and from then on only started and stopped.

Used by the autoscaler (which members to start or stop, repairing the pool), provisioning (making
it, waiting on it) and the local launcher (which members run). What EC2 allows is written here once,
from the EC2 API reference rather than from moto: an instance is created `pending` (it cannot be
created stopped), StopInstances is refused (IncorrectInstanceState) for a `pending` instance and
StartInstances for a `stopping` one, and RunInstances refuses an instance profile that IAM has not
yet propagated ("Invalid IAM Instance Profile name"), for seconds to minutes after it is created.

Hibernation (FR_HIBERNATE): a member is launched for it (it cannot be enabled later: an encrypted
root volume large enough for the RAM beside the system), and stopped with Hibernate=True, so that
a start resumes its worker with the model in memory. EC2 refuses the whole StopInstances call
(UnsupportedHibernationConfiguration) when an instance named was not launched for it: those are
then stopped plainly. An image cannot be made of an instance launched for hibernation, so the app
image is baked from a plain instance (tools/provision.py bake-ami) and only the pool hibernates.
"""
import logging
import threading
import time

import common
from common import PREFIX_TAG

log = logging.getLogger("pool")

APP_TIER_NAME = "app-tier-instance"
# Counted as running: a pending instance is about to take work.
ACTIVE_STATES = ("pending", "running")
# Members of the pool; shutting-down and terminated instances are gone from it.
POOL_STATES = ("pending", "running", "stopping", "stopped")
# Every state but terminated: what may still run, or be billed.
LIVE_STATES = (*POOL_STATES, "shutting-down")
# The states EC2 accepts StartInstances and StopInstances in, and changes something.
STARTABLE = ("stopped",)
STOPPABLE = ("running",)
# Watch describes the pool in full at least this often, even when every member still looks as
# expected (to see an instance tagged into it from outside).
REFRESH_SECONDS = 60
# Waiting for instance states: polls start fast (the local stack is quick) and slow down to this.
POLL_MAX_SECONDS = 2.0
# A member launched for hibernation: Amazon Linux 2023's root device, encrypted (with the account's
# default EBS key), as large as the image's 8 GB system plus the RAM (t3.small: 2 GiB) with room.
ROOT_DEVICE = "/dev/xvda"
ROOT_VOLUME_GB = 16
# StopInstances' refusals of a hibernation EC2 cannot do for an instance named.
HIBERNATION_REFUSED = ("UnsupportedHibernationConfiguration", "UnsupportedOperation")


def instance_name(index):
    return f"{APP_TIER_NAME}-{index}"


def tags(config, name):
    return [{"Key": "Name", "Value": name}, {"Key": PREFIX_TAG, "Value": config.prefix}]


def ours(ec2, config, names, states):
    """Instances tagged ours with a Name among `names` (wildcards allowed) in `states`:
    a list of {id, name, state, hibernates}: `hibernates` when launched for hibernation."""
    found = []
    pages = ec2.get_paginator("describe_instances").paginate(Filters=[
        {"Name": f"tag:{PREFIX_TAG}", "Values": [config.prefix]},
        {"Name": "tag:Name", "Values": list(names)},
        {"Name": "instance-state-name", "Values": list(states)},
    ])
    for page in pages:
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                name = next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == "Name"), "")
                found.append({"id": instance["InstanceId"], "name": name, "state": instance["State"]["Name"],
                              "hibernates": instance.get("HibernationOptions", {}).get("Configured", False)})
    return found


def _index(name):
    return int(name.rsplit("-", 1)[1])


def describe(ec2, config):
    """The pool's members: a list of {id, name, state, hibernates}, by instance number."""
    return sorted(ours(ec2, config, [f"{APP_TIER_NAME}-*"], POOL_STATES), key=lambda i: _index(i["name"]))


def instance_states(ec2, ids=None):
    """{instance id: state name} of the instances `ids` in any state, or of every running instance
    when `ids` is None. Asked several times a second, so asked with describe_instance_status: moto
    answers it with ~4 ms of CPU where describing 15 instances in full takes ~20 ms."""
    if ids is not None and not ids:
        return {}
    args = {} if ids is None else {"InstanceIds": list(ids), "IncludeAllInstances": True}
    states = {}
    for page in ec2.get_paginator("describe_instance_status").paginate(**args):
        states.update({s["InstanceId"]: s["InstanceState"]["Name"] for s in page["InstanceStatuses"]})
    return states


class Watch:
    """The pool's members and their states, observed cheaply, for whoever asks often (the
    autoscaler every step, the status page's chart): the members are remembered and only their
    states asked for (instance_states), unless one of them is gone or terminated, the pool is
    incomplete (being repaired, or not yet provisioned) or the memory is REFRESH_SECONDS old, when
    the pool is described in full again."""

    def __init__(self, ec2, config):
        self.ec2 = ec2
        self.config = config
        self.members = None  # [{id, name, hibernates}] from describe
        self.described = 0.0

    def observe(self):
        """The pool as describe gives it: a list of {id, name, state, hibernates}, by instance number."""
        from botocore.exceptions import ClientError

        remembered = self.members is not None and len(self.members) >= self.config.max_instances
        if remembered and time.monotonic() - self.described < REFRESH_SECONDS:
            try:
                states = instance_states(self.ec2, [i["id"] for i in self.members])
            except ClientError as e:  # an instance deleted since: InvalidInstanceID.NotFound
                log.info("event=pool_changed error=%s", e)
                states = {}
            if all(states.get(i["id"]) in POOL_STATES for i in self.members):
                return [dict(i, state=states[i["id"]]) for i in self.members]
        members = describe(self.ec2, self.config)
        self.members = [{k: v for k, v in i.items() if k != "state"} for i in members]
        self.described = time.monotonic()
        return members


def plan(pool, target):
    """(ids to start, ids to stop) to bring the pool's active members towards `target`.

    Only calls EC2 accepts: stopped members are started (lowest numbers first; a member still
    stopping is started on a later step), running members are stopped (highest numbers first; a
    pending one is stopped on a later step, once it runs). A state read a moment late is safe too:
    EC2 also accepts starting a pending member and stopping a stopping one. A busy worker that is
    stopped finishes its batch first."""
    active = [i for i in pool if i["state"] in ACTIVE_STATES]
    if target > len(active):
        return [i["id"] for i in pool if i["state"] in STARTABLE][: target - len(active)], []
    surplus = len(active) - target
    stoppable = [i["id"] for i in active if i["state"] in STOPPABLE]
    return [], stoppable[max(0, len(stoppable) - surplus):] if surplus else []


def missing(pool, size):
    """Names of the members 1..size that `pool` lacks."""
    present = {i["name"] for i in pool}
    return [instance_name(n) for n in range(1, size + 1) if instance_name(n) not in present]


def profile_not_ready(error):
    """True for RunInstances' refusal of an instance profile IAM has not yet propagated."""
    return (common.error_code(error) == "InvalidParameterValue"
            and "iamInstanceProfile" in error.response.get("Error", {}).get("Message", ""))


def run_instance(ec2, patience=0.0, **arguments):
    """RunInstances for one instance, made again while its instance profile is not yet usable, for
    up to `patience` seconds (IAM is eventually consistent); its id."""
    return common.while_refused(
        lambda: ec2.run_instances(MinCount=1, MaxCount=1, **arguments)["Instances"][0]["InstanceId"],
        profile_not_ready, patience, lambda error, pause: log.info("event=profile_not_ready retry_in=%.1f", pause))


def repair(ec2, config, pool, patience=0.0):
    """Launch the members missing from `pool` (they start `pending` and run: whoever owns the pool's
    states stops them once they run); their names. `patience`: see run_instance."""
    names = missing(pool, config.max_instances)
    if not names:
        return []
    if not config.ami_id:
        log.error("event=pool_incomplete missing=%d detail=FR_AMI_ID is not set, cannot create instances", len(names))
        return []
    for name in names:
        run_instance(ec2, patience, **launch_arguments(config),
                     TagSpecifications=[{"ResourceType": "instance", "Tags": tags(config, name)}])
    log.info("event=pool_repaired created=%s", ",".join(names))
    return names


def launch_arguments(config):
    """RunInstances' arguments for a member (but its tags): for hibernation with FR_HIBERNATE."""
    arguments = dict(ImageId=config.ami_id, InstanceType=config.instance_type,
                     IamInstanceProfile={"Name": config.role("app")})
    if config.hibernate:
        arguments.update(HibernationOptions={"Configured": True}, BlockDeviceMappings=[{
            "DeviceName": ROOT_DEVICE,
            "Ebs": {"Encrypted": True, "VolumeSize": ROOT_VOLUME_GB, "VolumeType": "gp3", "DeleteOnTermination": True},
        }])
    return arguments


def stop(ec2, members, hibernate):
    """Stop `members` (as describe gives them): with `hibernate`, those launched for it hibernate.
    A hibernation EC2 refuses is done as a plain stop; the refusal's text is returned (else None)."""
    from botocore.exceptions import ClientError

    sleepers = [i["id"] for i in members if hibernate and i.get("hibernates")]
    plain = [i["id"] for i in members if i["id"] not in sleepers]
    refused = None
    if sleepers:
        try:
            ec2.stop_instances(InstanceIds=sleepers, Hibernate=True)
        except ClientError as e:
            if common.error_code(e) not in HIBERNATION_REFUSED:
                raise
            refused, plain = str(e), plain + sleepers
    if plain:
        ec2.stop_instances(InstanceIds=plain)
    return refused


def wait_for(ec2, ids, wanted, timeout):
    """Wait until every instance of `ids` is in one of the states `wanted`; TimeoutError after
    `timeout` s, naming those that are not."""
    from botocore.exceptions import ClientError

    deadline = time.monotonic() + timeout
    pause = 0.05
    while True:
        try:
            states = instance_states(ec2, ids)
        except ClientError as e:  # EC2 is eventually consistent: a new instance may not be known yet
            if common.error_code(e) != "InvalidInstanceID.NotFound":
                raise
            states = {}
        waiting = {i: states.get(i) for i in ids if states.get(i) not in wanted}
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"instances not {'/'.join(wanted)} after {timeout} s: {waiting}")
        threading.Event().wait(pause)
        pause = min(pause * 2, POLL_MAX_SECONDS)
