"""The app-tier pool: FR_MAX_INSTANCES + FR_SPARE_INSTANCES EC2 instances named app-tier-instance-1 ... -N,
tagged fr-prefix=FR_PREFIX, made once and from then on only started and stopped.

Used by the autoscaler (which members to start or stop, repairing the pool), provisioning (making
it, waiting on it) and the local launcher (which members run). What EC2 allows is written here once,
from the EC2 API reference rather than from moto: an instance is created `pending` (it cannot be
created stopped), StopInstances is refused (IncorrectInstanceState) for a `pending` instance and
StartInstances for a `stopping` one, and RunInstances refuses an instance profile that IAM has not
yet propagated ("Invalid IAM Instance Profile name"), for seconds to minutes after it is created.

EC2 is eventually consistent: an instance just launched may be missing from DescribeInstances,
and calls naming it refused with InvalidInstanceID.NotFound, for a while. A member missing from a
describe is launched again with the same ClientToken (`launching.Launches`), which EC2 answers with the
instance it made the first time, and every wait treats an unknown instance as not there yet.

The pool has FR_MAX_INSTANCES + FR_SPARE_INSTANCES members, never more than FR_MAX_INSTANCES of them
pending or running: a burst that comes while members are still `stopping` (EC2 will not start
those) starts spare ones instead. Launching respects the same bound (`launching.repair` launches at most
what may run), so the vCPU quota that fits FR_MAX_INSTANCES running fits every launching.launch.

Hibernation (FR_HIBERNATE): a member is launched for it (it cannot be enabled later: an encrypted
root volume as large as the image's plus the swap file the RAM is written to), and stopped with
Hibernate=True, so that a start resumes its worker with the model in memory. StopInstances only
presses the instance's sleep button: the hibernation agent in the guest (aws/amazon-ec2-hibinit-agent)
does the rest, and ignores the button within 30 s of its last resume, while a booting guest's
agent has not done its boot work, and in the minutes after launching.launch, while it sets its swap
file up. EC2 then leaves the instance `stopping`, billed and unstartable, until it forces it off. So
a member is only hibernated once it is ready, by its launch time and its guest's own word (a tag:
core/guest.py; `hibernation_unready`); the others are stopped plainly, and the log says which and
why. EC2 refuses the whole StopInstances call (UnsupportedHibernationConfiguration) when one
member named cannot hibernate: each is then asked alone, and only those refused stop plainly.
An image cannot be made of an instance launched for hibernation, so the app image is baked from a
plain instance (deploy/image.py, bake-ami) and only the pool hibernates.
"""

import math
import re
import threading
import time
from datetime import UTC, datetime

import common
from core import cloud, guest
from core.settings import PREFIX_TAG
from scaling import launching, warming

log = common.EventLog("pool")

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
# StopInstances' refusals of a hibernation EC2 cannot do for an instance named.
HIBERNATION_REFUSED = ("UnsupportedHibernationConfiguration", "UnsupportedOperation")
# EC2 does not support keeping an instance hibernated for more than 60 days (User Guide, hibernation
# limitations): a member hibernated this long is started, and stopped plainly, well before.
HIBERNATION_REFRESH_DAYS = 50
# EC2's StateReason code of an instance stopped by hibernating.
HIBERNATE_REASON = "Client.UserInitiatedHibernate"
# EC2 gives LaunchTime and AttachTime in whole seconds: a time read from them may be this much early.
EC2_TIME_RESOLUTION = 1.0


def instance_name(index):
    return f"{APP_TIER_NAME}-{index}"


def tags(config, name):
    return [{"Key": "Name", "Value": name}, {"Key": PREFIX_TAG, "Value": config.prefix}]


def ours(ec2, config, names, states):
    """Instances tagged ours with a Name among `names` (wildcards allowed) in `states`:
    a list of {id, name, state, hibernates}: `hibernates` when launched for hibernation."""
    pages = ec2.get_paginator("describe_instances").paginate(Filters=_filters(config, names, states))
    return [_member(i) for i in _instances(pages)]


def _filters(config, names, states):
    """DescribeInstances' filters for instances tagged ours, named among `names`, in `states`."""
    return [
        {"Name": f"tag:{PREFIX_TAG}", "Values": [config.prefix]},
        {"Name": "tag:Name", "Values": list(names)},
        {"Name": "instance-state-name", "Values": list(states)},
    ]


def details(ec2, ids):
    """What EC2 says of the instances `ids` beyond ours(); {id: dict} (see _detailed)."""
    if not ids:
        return {}
    pages = ec2.get_paginator("describe_instances").paginate(InstanceIds=list(ids))
    return {i["InstanceId"]: _detailed(i) for i in _instances(pages)}


def _instances(pages):
    return [instance for page in pages for reservation in page["Reservations"] for instance in reservation["Instances"]]


def _member(instance):
    """{id, name, state, hibernates, hibernated} of a described instance (`hibernated`: stopped by
    hibernating, as EC2's StateReason says, when it was described)."""
    state = instance["State"]["Name"]
    return {
        "id": instance["InstanceId"],
        "state": state,
        "name": next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == "Name"), ""),
        "hibernates": instance.get("HibernationOptions", {}).get("Configured", False),
        "hibernated": state == "stopped" and instance.get("StateReason", {}).get("Code") == HIBERNATE_REASON,
    }


def _detailed(instance):
    """_member's fields and `launched` (the first launching.launch: the primary network interface's attach
    time, which a start does not change), `started` (LaunchTime, which EC2 sets at every start),
    `hibernated_at` (when a member stopped by hibernating was stopped, else None), epoch seconds;
    `guest`: the guest's own mark (core/guest.py: (event, epoch seconds)), or None."""
    started = instance["LaunchTime"].timestamp()
    attached = [
        n["Attachment"]["AttachTime"]
        for n in instance.get("NetworkInterfaces", [])
        if n.get("Attachment", {}).get("DeviceIndex") == 0 and "AttachTime" in n["Attachment"]
    ]
    hibernated = instance["State"]["Name"] == "stopped" and instance.get("StateReason", {}).get("Code") == HIBERNATE_REASON
    return dict(
        _member(instance),
        launched=attached[0].timestamp() if attached else started,
        started=started,
        hibernated_at=_transition_time(instance) if hibernated else None,
        guest=guest.mark_of(instance.get("Tags", [])),
    )


def _transition_time(instance):
    """When EC2 says the instance last changed state by request: StateTransitionReason reads
    "User initiated (2026-11-30 14:00:00 GMT)" (epoch seconds; None if it does not)."""
    reason = instance.get("StateTransitionReason", "")
    try:
        stamp = reason[reason.index("(") + 1 : reason.index("(") + 20]
        return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _index(name):
    return int(name.rsplit("-", 1)[1])


# A member's name: app-tier-instance-N, N a number from 1. Anything else tagged ours (an operator's
# typo, an instance copied by hand) is not a member: left alone, and said once.
MEMBER_NAME = re.compile(rf"{APP_TIER_NAME}-[1-9][0-9]*")
_strays_said = set()


def describe(ec2, config):
    """The pool's members: a list of {id, name, state, hibernates, hibernated}, by instance number
    (an instance tagged ours under another name is no member: MEMBER_NAME)."""
    members = []
    for instance in ours(ec2, config, [f"{APP_TIER_NAME}-*"], POOL_STATES):
        if MEMBER_NAME.fullmatch(instance["name"]):
            members.append(instance)
        elif instance["id"] not in _strays_said:
            _strays_said.add(instance["id"])
            log.warning(
                "stray_instance", instance=instance["id"], name=instance["name"], detail="tagged ours, not a member: left alone"
            )
    return sorted(members, key=lambda i: _index(i["name"]))


def instance_states(ec2, ids=None):
    """{instance id: state name} of the instances `ids` in any state, or of every running instance
    when `ids` is None. Asked several times a second, so asked with describe_instance_status, which
    costs moto a fraction of a full describe (docs/performance.md, "Measurements behind the code")."""
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

        remembered = self.members is not None and len(self.members) >= self.config.pool_size
        if remembered and time.monotonic() - self.described < REFRESH_SECONDS:
            try:
                states = instance_states(self.ec2, [i["id"] for i in self.members])
            except ClientError as e:  # an instance deleted since: InvalidInstanceID.NotFound
                log.info("pool_changed", error=e)
                states = {}
            if all(states.get(i["id"]) in POOL_STATES for i in self.members):
                return [dict(i, state=states[i["id"]]) for i in self.members]
        members = describe(self.ec2, self.config)
        self.members = [{k: v for k, v in i.items() if k != "state"} for i in members]
        self.described = time.monotonic()
        return members


# How often members are looked at for a hibernation EC2 would no longer support (60 days).
REFRESH_CHECK_SECONDS = 3600


def active(members):
    """How many of `members` are pending or running."""
    return sum(i["state"] in ACTIVE_STATES for i in members)


class Pool:
    """The pool as the one process that steers it sees it (the autoscaler): its members observed
    (Watch) with the missing ones launched (launching.repair), and resized to a target (plan, then one start
    and one stop call). It remembers what that takes from one step to the next: the launches not
    yet seen, which members it hibernated (started first: they resume with the model loaded), and
    which have been hibernated too long."""

    def __init__(self, ec2, config, wall_clock=time.time):
        self.ec2 = ec2
        self.config = config
        self.watch = Watch(ec2, config)
        self.launches = launching.Launches(config)
        self.warm = None  # members hibernated: EC2's word at the first observation, then this process's
        self.warming = warming.Warming(config)  # cold members booted while idle, to hibernate
        self.stale = set()  # members hibernated too long, to start (and stop plainly)
        self.refresh_due = -math.inf
        self.wall_clock = wall_clock
        self.repairs = common.Failures(log, "repair_failed")

    def observe(self):
        """The members, the missing ones launched first. A refusal (an instance profile IAM has not
        propagated yet, a quota) is logged and tried again next time: scaling goes on meanwhile."""
        from botocore.exceptions import ClientError

        members = self.watch.observe()
        if self.warm is None:  # a restarted autoscaler knows the members hibernated before it
            self.warm = {m["id"] for m in members if m["hibernated"]}
        self.launches.seen(members)  # forgotten once seen, even by a restarted autoscaler
        if len(members) >= self.config.pool_size:
            return members
        try:
            launched = launching.repair(self.ec2, self.config, members, launches=self.launches)
        except ClientError as e:
            self.repairs.failed(e)
            return members
        self.repairs.recovered()
        self.warming.begin(launched.values())  # running: warmed now, not stopped cold and booted again
        # Described again when it launched: the pool remembered is incomplete.
        return self.watch.observe() if launched else members

    def resize(self, members, target, idle=False):
        """Start and stop members of `members` (as observed) so that `target` run: (started ids,
        stopped ids). Members warming (scaling/warming.py) are the warm-up's: not planned, but
        counted against FR_MAX_INSTANCES, while `idle` (no work): then, when nothing else starts or
        stops, cold members are started to be warmed, and each warming member is hibernated once it may be."""
        if not idle:
            self.warming.release()
        busy = self.warming.active(members)
        others = [m for m in members if m["id"] not in busy]
        room = self.config.max_instances - len(busy)
        started, stopped = plan(others, min(target, room), self.warm or ())
        started += [i for i in self.refresh(members, active(members) + len(started)) if i not in started]
        warmed = []
        if busy:  # before any new start: `members` shows those still stopped, and due() would drop them
            ready, overdue = self.warming.due(members, details(self.ec2, list(busy)), self.wall_clock())
            warmed = ready + overdue
            if warmed:
                self.stop(warmed, members)
        cold = []
        # Only once the pool has settled after a burst (none of its members still stopping, or
        # pending): the scale-in is seen through (0 running within seconds of the last answer).
        settled = not any(m["state"] in ("pending", "stopping") for m in others)
        if idle and settled and not started and not stopped and not warmed:
            cold = self.warming.cold(members, (self.warm or set()) | self.stale, self.config.max_instances - active(members))
        if started or cold:
            self.ec2.start_instances(InstanceIds=started + cold)
            self.warm = (self.warm or set()) - set(started)
            self.warming.begin(cold)
        if stopped:
            self.stop(stopped, members)
        return started + cold, stopped + warmed

    def stop(self, ids, members):
        """Hibernate (FR_HIBERNATE) or stop the members `ids`; each one stopped plainly though
        hibernation is on is one line saying why."""
        hibernated = stop_and_say(self.ec2, ids, self.config, {i["id"]: i["name"] for i in members})
        self.warm = (self.warm or set()) | set(hibernated)

    def refresh(self, members, running):
        """Members hibernated for HIBERNATION_REFRESH_DAYS, to start beside `running` ones while
        fewer than FR_MAX_INSTANCES would run: started, they are stopped plainly at the next
        scale-in (they have just started), which EC2 supports for as long as they stay stopped."""
        if time.monotonic() >= self.refresh_due:
            self.refresh_due = time.monotonic() + REFRESH_CHECK_SECONDS
            self.stale = set(stale_hibernations(self.ec2, self.config, self.wall_clock()))
        chosen = [i["id"] for i in members if i["id"] in self.stale and i["state"] in STARTABLE]
        chosen = chosen[: max(0, self.config.max_instances - running)]
        for instance in chosen:
            log.info(
                "hibernation_refresh",
                instance=instance,
                detail=f"hibernated {HIBERNATION_REFRESH_DAYS} days or more: started, to stop plainly",
            )
        self.stale.difference_update(chosen)
        return chosen


def plan(pool, target, warm=()):
    """(ids to start, ids to stop) to bring the pool's active members towards `target`.

    Only calls EC2 accepts: stopped members are started (those in `warm`, hibernated with their
    worker loaded, first; then lowest numbers first; a member still stopping is not started: a
    spare is, or it is on a later step), running members are stopped (highest numbers first; a
    pending one is stopped on a later step, once it runs). A state read a moment late is safe too:
    EC2 also accepts starting a pending member and stopping a stopping one. A busy worker that is
    stopped finishes its batch first."""
    active = [i for i in pool if i["state"] in ACTIVE_STATES]
    if target > len(active):
        startable = sorted((i for i in pool if i["state"] in STARTABLE), key=lambda i: i["id"] not in warm)
        return [i["id"] for i in startable][: target - len(active)], []
    surplus = len(active) - target
    stoppable = [i["id"] for i in active if i["state"] in STOPPABLE]
    return [], stoppable[max(0, len(stoppable) - surplus) :] if surplus else []


def missing(pool, size):
    """Names of the members 1..size that `pool` lacks."""
    present = {i["name"] for i in pool}
    return [instance_name(n) for n in range(1, size + 1) if instance_name(n) not in present]


def hibernation_unready(member, now, config):
    """Why the guest would not hibernate `member` (as details() gives it) at epoch time `now`, or
    None when it would. In the first minutes after launching.launch the agent is still setting its
    swap file up (EC2's troubleshooting guide: wait about two minutes). After that, the guest's own
    mark (core/guest.py) says how it last started: a boot is ready once its agent has done that
    boot's work; a resume, FR_HIBERNATE_AFTER_RESUME after it (the agent ignores the sleep button
    within 30 s of a resume: acpid.sleep.sh, STALE_THRESHOLD). A mark older than EC2's LaunchTime is
    an earlier start's: this start's guest has said nothing yet (booting, resuming, or broken)."""
    if not member.get("hibernates"):
        return "not launched for hibernation"
    since_launch = now - member["launched"] - EC2_TIME_RESOLUTION
    if since_launch < config.hibernate_after_launch:
        return f"launched {since_launch:.0f} s ago, under FR_HIBERNATE_AFTER_LAUNCH={config.hibernate_after_launch:g}"
    mark = guest_mark(member)
    if mark is None:
        return "its guest has not said it is up since its start (booting, or resuming)"
    event, at = mark
    if event == guest.UNABLE:
        return "its guest says its hibernation agent is missing or failed this boot"
    if event == guest.RESUMED and now - at < config.hibernate_after_resume:
        return f"resumed {now - at:.0f} s ago, under FR_HIBERNATE_AFTER_RESUME={config.hibernate_after_resume:g}"
    return None


def guest_mark(member):
    """The guest's mark (event, epoch time) of `member`'s (as details() gives it) last start, or None."""
    mark = member.get("guest")
    # LaunchTime is whole seconds, never after the start: a mark of this start is not before it
    # (and an earlier start's is long before: a stop and a start take far longer than a second).
    return None if mark is None or mark[1] < member["started"] else mark


def stale_hibernations(ec2, config, now):
    """Ids of members hibernated HIBERNATION_REFRESH_DAYS ago or longer."""
    pages = ec2.get_paginator("describe_instances").paginate(Filters=_filters(config, [f"{APP_TIER_NAME}-*"], ["stopped"]))
    limit = now - HIBERNATION_REFRESH_DAYS * 86400
    return [d["id"] for d in map(_detailed, _instances(pages)) if d["hibernated_at"] is not None and d["hibernated_at"] <= limit]


def stop(ec2, ids, config):
    """Stop the members `ids`: with FR_HIBERNATE, each that the guest would hibernate now
    (hibernation_unready) hibernates; the others, and any whose hibernation EC2 refuses, stop
    plainly. (hibernated ids, {id: why it was stopped plainly}); why is None without FR_HIBERNATE."""
    from botocore.exceptions import ClientError

    if not config.hibernate:
        ec2.stop_instances(InstanceIds=list(ids))
        return [], dict.fromkeys(ids)
    now = time.time()
    found = details(ec2, ids)
    plain = {i: hibernation_unready(found[i], now, config) if i in found else "not described" for i in ids}
    sleepers = [i for i, why in plain.items() if why is None]
    for i in sleepers:
        del plain[i]
    try:
        if sleepers:
            ec2.stop_instances(InstanceIds=sleepers, Hibernate=True)
    except ClientError as e:
        if cloud.error_code(e) not in HIBERNATION_REFUSED:
            raise
        # Refused whole for one of them: asked one by one, only those refused stop plainly.
        for i in list(sleepers):
            try:
                ec2.stop_instances(InstanceIds=[i], Hibernate=True)
            except ClientError as alone:
                if cloud.error_code(alone) not in HIBERNATION_REFUSED:
                    raise
                sleepers.remove(i)
                plain[i] = f"refused by EC2: {cloud.error_code(alone)}"
    if plain:
        ec2.stop_instances(InstanceIds=list(plain))
    return sleepers, plain


def stop_and_say(ec2, ids, config, names=None):
    """stop(), and one line for each member stopped plainly though hibernation is on, saying why
    (`names`: {id: name} for the line); the hibernated ids."""
    hibernated, plain = stop(ec2, ids, config)
    for instance, why in plain.items():
        if why is not None:
            log.info("stopped_plainly", instance=instance, name=(names or {}).get(instance), reason=why)
    return hibernated


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
            if cloud.error_code(e) != "InvalidInstanceID.NotFound":
                raise
            states = {}
        waiting = {i: states.get(i) for i in ids if states.get(i) not in wanted}
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"instances not {'/'.join(wanted)} after {timeout} s: {waiting}")
        threading.Event().wait(pause)
        pause = min(pause * 2, POLL_MAX_SECONDS)
