"""AWS-like behaviour for the local moto server (FR_SIMULATE=aws), where moto's differences from AWS
have bitten us. tools/motoserver.py installs it; local mode, the tests and the benchmark run on it.

moto starts, stops and terminates instances at once, accepts every state change, has no IAM
propagation delay, counts SQS messages exactly and lets a queue name be reused at once. AWS does
none of that. Here:

- EC2 instances pass through `pending`, `stopping` and `shutting-down` for a while, and
  StartInstances/StopInstances are refused whole, with EC2's IncorrectInstanceState, when any
  instance named is in a state EC2 refuses (start: stopping, shutting-down, terminated; stop:
  pending, shutting-down, terminated). Starting a running instance and stopping a stopped one are
  accepted and change nothing, as on EC2.
- StopInstances with Hibernate=True is refused whole (UnsupportedHibernationConfiguration) when
  an instance named was not launched with HibernationOptions.Configured; otherwise its StateReason
  says Client.UserInitiatedHibernate, as EC2's does, which the local launcher reads to freeze the
  instance's worker instead of stopping it, and to resume it `resume` seconds after it runs again.
- The guest's hibernation agent (aws/amazon-ec2-hibinit-agent) decides whether a hibernation
  happens: within `agent_setup` seconds of its launch (the agent is still making its swap file),
  or within `agent_resume_threshold` seconds of its last resume (acpid.sleep.sh ignores the sleep
  button then), the request is dropped: the instance stays `stopping` until EC2 forces it off
  after `force_stop` seconds, then is `stopped` plainly (journalled as HibernationDropped).
- EC2 is eventually consistent: an instance is missing from DescribeInstances and
  DescribeInstanceStatus, and calls naming it get InvalidInstanceID.NotFound, for `describe_lag`
  seconds after RunInstances (and `pending` for its `pending` seconds after that). RunInstances
  honours ClientToken (moto launches again): the same token returns the instances it launched
  (IdempotentInstanceTerminated once they are gone).
- LaunchTime is the time of the last start, as on EC2 (moto keeps the first launch's); the
  primary network interface's AttachTime stays the launch's.
- An image's root snapshot is as large as its instance's root volume (moto: always 15 GB), and
  RunInstances refuses a root volume smaller than the snapshot (InvalidBlockDeviceMapping).
- DeregisterImage honours DeleteAssociatedSnapshots (moto ignores it); otherwise its snapshots are
  refused by DeleteSnapshot (InvalidSnapshot.InUse) for `snapshot_release` seconds after it. A
  snapshot deleted either way is still listed by DescribeSnapshots for `snapshot_listing_lag`
  seconds (EC2 is eventually consistent), and DeleteSnapshot of it is InvalidSnapshot.NotFound.
- GetEbsDefaultKmsKeyId answers (moto has no such call): the account's default EBS key, the AWS
  managed alias/aws/ebs (KeyManager AWS) unless ModifyEbsDefaultKmsKeyId named a key of the
  account's own; a launch of an encrypted volume with such a key needs the key's KMS permissions.
- CreateImage's image is `pending` for `image_create` seconds before it is `available` (moto: at once;
  a first snapshot of a volume takes minutes).
- RunInstances refuses an instance profile created (or given its role) less than
  `profile_propagation` seconds ago, with EC2's "Invalid IAM Instance Profile name".
- SQS's ApproximateNumberOf* attributes report the queue as it was `sqs_count_lag` seconds ago.
- CreateQueue refuses a name deleted less than `queue_name_reuse` seconds ago (QueueDeletedRecently).
- A new queue cannot be used for its first `queue_ready` seconds (CreateQueue reference: "wait at
  least one second after the queue is created"): calls naming it but GetQueueUrl are answered
  QueueDoesNotExist, and a RedrivePolicy naming it as the dead-letter target is refused.
- A message's visibility may be extended to at most 12 hours after the receive that gave its
  receipt handle (ChangeMessageVisibility reference); moto counts them from when it was sent, so
  that a message older than 12 hours could never be hidden again.
- IAM is enforced: a role's calls are checked against its policies (tools/awsiam.py), and a bucket
  of another account is refused to anyone of this one (AccessDenied; HeadBucket a bare 403), as no
  bucket policy grants it (S3 bucket names are global: CreateBucket says BucketAlreadyExists).
- CreateBucket of a name deleted less than `bucket_name_reuse` seconds ago is refused with
  OperationAborted ("A conflicting conditional operation is currently in progress"), as S3 does
  while the deletion propagates (moto: the name is free at once).
- A Run Command's invocation (GetCommandInvocation) does not exist for its first `invocation_lag`
  seconds (InvocationDoesNotExist, as botocore's CommandExecuted waiter expects). On an instance the
  local stack stands in for the agent of (serve_as_agent: the web host), it is then InProgress until
  the stack reports its outcome (report_invocation); on any other, Success (an agent with nothing to
  run; moto: Success at once, whatever the script did).
- DeleteSecurityGroup is refused (DependencyViolation) while an instance not yet terminated uses it.
- Service Quotas answers for the On-Demand Standard vCPU quota (moto knows only VPC quotas), with
  EC2_STANDARD_VCPUS.
- A DynamoDB table is CREATING for `table_create` seconds after CreateTable, its items refused
  meanwhile (ResourceNotFoundException: "its status might not be ACTIVE"), and DELETING for
  `table_delete` seconds after DeleteTable (moto: ACTIVE at once, gone at once), its name taken until
  then (CreateTable: ResourceInUseException); DeleteTable of a CREATING table is refused
  (ResourceInUseException), of a DELETING one accepted and changes nothing.

Each default below is AWS's documented figure or a public measurement; docs/local-stack.md names the
source of each. FR_SIMULATE_TIME_SCALE multiplies them all (the tests use a small fraction). Every EC2
state-change call, and every refusal, is journalled as a JSON line in FR_STATE_DIR/simulation.jsonl,
so that tests can check what was asked of EC2 and when.
"""

import copy
import json
import math
import threading
import time
import weakref
from collections import deque

from tools import awsiam

# Seconds, at FR_SIMULATE_TIME_SCALE=1.
TIMINGS = {
    "pending": 5.0,
    "boot": 17.0,
    "resume": 5.0,
    "stopping": 30.0,
    "shutting_down": 30.0,
    "profile_propagation": 10.0,
    "sqs_count_lag": 60.0,
    "queue_name_reuse": 60.0,
    "describe_lag": 2.0,
    "agent_setup": 120.0,
    "agent_resume_threshold": 30.0,
    "force_stop": 1200.0,
    "snapshot_release": 5.0,
    "table_create": 10.0,
    "table_delete": 10.0,
    "bucket_name_reuse": 30.0,
    "queue_ready": 1.0,
    "snapshot_listing_lag": 5.0,
    "image_create": 60.0,
    "invocation_lag": 1.0,
}
STATE_CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}
# EC2 refuses these calls for an instance in these states.
REFUSED = {
    "StartInstances": ("stopping", "shutting-down", "terminated"),
    "StopInstances": ("pending", "shutting-down", "terminated"),
}
LAGGED_COUNTS = (
    "approximate_number_of_messages_delayed",
    "approximate_number_of_messages_not_visible",
    "approximate_number_of_messages",
)
JOURNAL_NAME = "simulation.jsonl"
# Where the local stack, as an instance's SSM agent, reports a Run Command's outcome.
INVOCATIONS_DIR = "invocations"
# EC2's StateReason code of an instance stopped by hibernating.
HIBERNATE_REASON = "Client.UserInitiatedHibernate"
# "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", in vCPUs. Not AWS's figure
# (it differs by account, and new accounts often get less): what the default deployment needs,
# 15 t3.small + 1 t3.micro, so that the provisioning check works at its edge.
VCPU_QUOTA_CODE = "L-1216C47A"
EC2_STANDARD_VCPUS = 32.0
# How often the true SQS counts are sampled, to be reported `sqs_count_lag` later.
SQS_SAMPLE_SECONDS = 0.1


def timings(scale):
    """TIMINGS, each multiplied by `scale`."""
    return {name: seconds * scale for name, seconds in TIMINGS.items()}


def read_journal(state_dir):
    """The journal's entries, oldest first: {at, action, instances, refused}."""
    path = state_dir / JOURNAL_NAME
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


class Simulation:
    def __init__(self, scale, state_dir):
        self.t = timings(scale)
        state_dir.mkdir(parents=True, exist_ok=True)
        self._journal = open(state_dir / JOURNAL_NAME, "w", buffering=1)  # a new moto knows nothing older
        self._lock = threading.Lock()
        self.profiles_changed = {}  # instance profile name -> monotonic time
        self.queues_deleted = {}  # (account, region, name) -> monotonic time
        self.queues = weakref.WeakSet()
        self.true_counts = []  # moto's own ApproximateNumberOf* properties, in LAGGED_COUNTS order
        self.request = threading.local()  # what moto's backend is not told of the call in progress
        self.launches = {}  # (account, region, ClientToken) -> the reservation RunInstances made
        self.buckets_deleted = {}  # bucket name -> monotonic time
        self.state_dir = state_dir

    def record(self, action, instances, refused=None, **extra):
        """Journal one entry; `extra` fields with a None value are left out."""
        entry = {"at": time.time(), "action": action, "instances": instances, "refused": refused}
        entry.update({k: v for k, v in extra.items() if v is not None})
        with self._lock:
            self._journal.write(json.dumps(entry) + "\n")

    def move(self, instance, through, to, delay):
        """Put `instance` in state `through` now and in `to` after `delay` s, unless it moves again
        first. Arrivals in `stopped` are journalled with the time spent in `through`."""
        instance.sim_generation = generation = getattr(instance, "sim_generation", 0) + 1
        set_state(instance, through)

        def arrive():
            if instance.sim_generation == generation:
                set_state(instance, to)
                if to == "stopped":
                    self.record("Stopped", [instance.id], after=round(delay, 3))

        later(delay, arrive)

    def check(self, action, instances):
        """Refuse the whole call, as EC2 does, when any instance is in a state EC2 refuses it for."""
        from moto.ec2.exceptions import EC2ClientError

        for instance in instances:
            state = instance._state.name
            if state in REFUSED[action]:
                self.record(action, [i.id for i in instances], refused=f"{instance.id} is {state}")
                verb = "started" if action == "StartInstances" else "stopped"
                raise EC2ClientError(
                    "IncorrectInstanceState", f"The instance '{instance.id}' is not in a state from which it can be {verb}."
                )

    def check_hibernation(self, instances):
        """Refuse the whole hibernation, as EC2 does, when an instance was not launched for it."""
        from moto.ec2.exceptions import EC2ClientError

        for instance in instances:
            if str((instance.hibernation_options or {}).get("Configured")).lower() != "true":
                self.record("StopInstances", [i.id for i in instances], refused=f"{instance.id} not configured", hibernate=True)
                raise EC2ClientError(
                    "UnsupportedHibernationConfiguration",
                    f"The instance can't be hibernated because it was not configured at launch for hibernation: {instance.id}",
                )

    def guest_drops_hibernation(self, instance):
        """Why the guest's hibernation agent would ignore the sleep button now, or None."""
        now = time.monotonic()
        since_launch = now - getattr(instance, "sim_launched", -math.inf)
        if since_launch < self.t["agent_setup"]:
            return f"launched {since_launch:.2f} s ago: the agent is still setting up its swap file"
        since_resume = now - getattr(instance, "sim_resumed", -math.inf)
        if since_resume < self.t["agent_resume_threshold"]:
            return f"resumed {since_resume:.2f} s ago: the agent ignores the sleep button that soon"
        return None

    def hidden(self, instance):
        """True while a new instance is not yet visible to describe calls (eventual consistency)."""
        return (
            not getattr(self.request, "launching", False)
            and time.monotonic() - getattr(instance, "sim_created", -math.inf) < self.t["describe_lag"]
        )

    def profile_is_new(self, name):
        changed = self.profiles_changed.get(name)
        return changed is not None and time.monotonic() - changed < self.t["profile_propagation"]

    def sample_queues(self, stop):
        """Keep each queue's true counts over the last `sqs_count_lag` seconds (and one older sample)."""
        while not stop.wait(SQS_SAMPLE_SECONDS):
            now = time.monotonic()
            for queue in list(self.queues):
                history = queue.sim_history
                history.append((now, *(count.fget(queue) for count in self.true_counts)))
                while len(history) > 1 and history[1][0] <= now - self.t["sqs_count_lag"]:
                    history.popleft()

    def lagged(self, queue, index):
        """A count as it was `sqs_count_lag` seconds ago (0 before the queue's first sample)."""
        then = time.monotonic() - self.t["sqs_count_lag"]
        value = 0
        for sample in list(queue.sim_history):
            if sample[0] > then:
                break
            value = sample[index]
        return value


def set_state(instance, name):
    instance._state.name = name
    instance._state.code = STATE_CODES[name]


def install(scale, state_dir):
    """Patch moto (in this process) to behave as described above."""
    sim = Simulation(scale, state_dir)
    install_launches(sim)
    install_state_changes(sim)
    install_account(sim)
    install_sqs(sim)
    install_new_queues(sim)
    install_consistency(sim)
    install_images(sim)
    install_dynamodb(sim)
    install_s3(sim)
    install_ebs_key()
    install_ssm(sim)
    awsiam.install(sim)
    return sim


def later(delay, action):
    timer = threading.Timer(delay, action)
    timer.daemon = True
    timer.start()


def install_launches(sim):
    """RunInstances: a new instance profile refused for a while, ClientToken honoured, a root volume
    smaller than the image's snapshot refused; a new instance `pending` for a while."""
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import EC2ClientError, InvalidParameterValue
    from moto.ec2.models.instances import Instance, InstanceBackend
    from moto.ec2.responses.instances import InstanceResponse

    instance_constructor, run_instances = Instance.__init__, InstanceBackend.run_instances
    run_response = InstanceResponse.run_instances

    def instance_init(self, *args, **kwargs):
        instance_constructor(self, *args, **kwargs)
        self.sim_created = self.sim_launched = time.monotonic()
        # Pending as describe calls see it: from when the new instance becomes visible to them.
        sim.move(self, "pending", "running", sim.t["describe_lag"] + sim.t["pending"])

    def patched_run_instances(self, image_id, count, user_data, security_group_names, **kwargs):
        profile = kwargs.get("iam_instance_profile_name")
        if profile and sim.profile_is_new(profile):
            sim.record("RunInstances", [], refused=f"instance profile {profile} not yet propagated")
            raise InvalidParameterValue(
                f"Value ({profile}) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name"
            )
        check_root_volume(self, image_id, kwargs.get("block_device_mappings") or [])
        reservation = run_instances(self, image_id, count, user_data, security_group_names, **kwargs)
        sim.record("RunInstances", [i.id for i in reservation.instances])
        return reservation

    def check_root_volume(self, image_id, mappings):
        """EC2 refuses a root volume smaller than the image's root snapshot."""
        image = self.amis.get(image_id)
        if image is None:
            return
        for mapping in mappings:
            size = (mapping.get("Ebs") or {}).get("VolumeSize")
            if mapping.get("DeviceName") == image.root_device_name and size and int(size) < image_gb(image):
                sim.record("RunInstances", [], refused=f"root volume {size} GB < snapshot {image_gb(image)} GB")
                raise EC2ClientError(
                    "InvalidBlockDeviceMapping",
                    f"Volume of size {size}GB is smaller than snapshot '{image.ebs_snapshot.id}', "
                    f"expect size >= {image_gb(image)}GB",
                )

    def run_instances_response(self):
        """moto's RunInstances, with its ClientToken honoured (moto puts a default in its place and
        launches again) and the new instance visible to the calls RunInstances makes itself."""
        token = self._get_param("ClientToken")
        key = (self.current_account, self.region, token)
        earlier = sim.launches.get(key) if token else None
        if earlier is not None:
            if all(i._state.name == "terminated" for i in earlier.instances):
                raise EC2ClientError(
                    "IdempotentInstanceTerminated", f"The client token {token} was used by instances now terminated"
                )
            sim.record("RunInstances", [i.id for i in earlier.instances], idempotent=True)
            return ActionResult(earlier)
        sim.request.launching = True
        try:
            result = run_response(self)
        finally:
            sim.request.launching = False
        if token:
            sim.launches[key] = result.result
        return result

    Instance.__init__ = instance_init
    InstanceBackend.run_instances = patched_run_instances
    InstanceResponse.run_instances = run_instances_response


def install_state_changes(sim):
    """StartInstances, StopInstances (Hibernate=True seen) and TerminateInstances: refused as EC2
    refuses them, and taking time, as the guest's hibernation agent decides for a hibernation."""
    from moto.core.utils import utcnow
    from moto.ec2.models.instances import Instance, InstanceBackend, StateReason
    from moto.ec2.responses.instances import InstanceResponse

    original = {name: getattr(Instance, name) for name in ("start", "stop", "terminate")}
    stop_response = InstanceResponse.stop_instances

    def state_change(action, changes, method, through, to, timing):
        """EC2's `action`: refused whole for a state EC2 refuses; an instance in state `changes` is
        changed by moto's `method`, then spends `timing` in `through` before `to`; others stay."""

        def change(self, instance_ids):
            instances = self.get_multi_instances_by_id(instance_ids)
            sim.check(action, instances)
            hibernate = action == "StopInstances" and getattr(sim.request, "hibernate", False)
            if hibernate:
                sim.check_hibernation(instances)
            changed = []
            for instance in instances:
                previous = copy.copy(instance._state)
                if previous.name == changes:
                    resuming = getattr(instance.state_reason, "code", "") == HIBERNATE_REASON
                    original[method](instance)
                    if action == "StartInstances":
                        started(instance, resuming)
                    delay = hibernating(instance) if hibernate else sim.t[timing]
                    sim.move(instance, through, to, delay)
                changed.append((instance, previous))
            sim.record(action, instance_ids, hibernate=hibernate or None)
            return changed

        return change

    def started(instance, resuming):
        """EC2's LaunchTime is the last start's; a guest resumed from hibernation has its agent's
        resumed_at after `pending` and the resume."""
        instance.launch_time = utcnow()
        instance.sim_resumed = time.monotonic() + sim.t["pending"] + sim.t["resume"] if resuming else -math.inf

    def hibernating(instance):
        """Seconds `instance` spends stopping: a stop's, or EC2's force-stop time when its guest drops
        the hibernation."""
        dropped = sim.guest_drops_hibernation(instance)
        if dropped:
            sim.record("HibernationDropped", [instance.id], reason=dropped)
            return sim.t["force_stop"]
        instance.state_reason = StateReason("Client.UserInitiatedHibernate: User initiated hibernate", HIBERNATE_REASON)
        return sim.t["stopping"]

    def stop_instances_response(self):
        """moto's StopInstances, with its Hibernate parameter seen (moto ignores it)."""
        sim.request.hibernate = self._get_bool_param("Hibernate", False)
        try:
            return stop_response(self)
        finally:
            sim.request.hibernate = False

    def terminate(self):
        previous = copy.copy(self._state)
        if previous.name not in ("shutting-down", "terminated"):
            original["terminate"](self)
            sim.move(self, "shutting-down", "terminated", sim.t["shutting_down"])
            sim.record("TerminateInstances", [self.id])
        return previous

    InstanceResponse.stop_instances = stop_instances_response
    Instance.terminate = terminate
    InstanceBackend.start_instances = state_change("StartInstances", "stopped", "start", "pending", "running", "pending")
    InstanceBackend.stop_instances = state_change("StopInstances", "running", "stop", "stopping", "stopped", "stopping")


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


def install_sqs(sim):
    """SQS's counts lagging, queue names not reusable at once, the 12-hour visibility cap counted
    from the receive."""
    from moto.core.utils import unix_time_millis
    from moto.sqs.exceptions import ReceiptHandleIsInvalid, SQSException
    from moto.sqs.models import MAXIMUM_VISIBILITY_TIMEOUT, Message, Queue, SQSBackend

    queue_constructor, queue_creator, queue_deleter = Queue.__init__, SQSBackend.create_queue, SQSBackend.delete_queue
    message_received = Message.mark_received

    def queue_init(self, *args, **kwargs):
        queue_constructor(self, *args, **kwargs)
        self.sim_history = deque()
        sim.queues.add(self)

    def create_queue(self, name, *args, **kwargs):
        deleted = sim.queues_deleted.get((self.account_id, self.region_name, name))
        if name not in self.queues and deleted and time.monotonic() - deleted < sim.t["queue_name_reuse"]:
            raise SQSException(
                "QueueDeletedRecently",
                "You must wait 60 seconds after deleting a queue before you can create another queue with the same name.",
            )
        return queue_creator(self, name, *args, **kwargs)

    def delete_queue(self, queue_name):
        queue_deleter(self, queue_name)
        sim.queues_deleted[(self.account_id, self.region_name, queue_name)] = time.monotonic()

    def mark_received(self, *args, **kwargs):
        message_received(self, *args, **kwargs)
        self.sim_received_ms = unix_time_millis()

    def change_message_visibility(self, queue_name, receipt_handle, visibility_timeout):
        """moto's, with the 12-hour cap counted from the last receive, as AWS counts it."""
        queue = self.get_queue(queue_name)
        for message in queue._messages:
            if message.had_receipt_handle(receipt_handle):
                received = getattr(message, "sim_received_ms", message.sent_timestamp)
                if unix_time_millis() + int(visibility_timeout) * 1000 - received > MAXIMUM_VISIBILITY_TIMEOUT * 1000:
                    raise SQSException(
                        "InvalidParameterValue",
                        f"Value {visibility_timeout} for parameter VisibilityTimeout is invalid. Reason: "
                        f"Total VisibilityTimeout for the message is beyond the limit "
                        f"[{MAXIMUM_VISIBILITY_TIMEOUT} seconds]",
                    )
                message.change_visibility(visibility_timeout)
                if message.visible and message in queue.pending_messages:
                    queue.pending_messages.remove(message)
                return
        raise ReceiptHandleIsInvalid

    Queue.__init__ = queue_init
    SQSBackend.create_queue = create_queue
    SQSBackend.delete_queue = delete_queue
    Message.mark_received = mark_received
    SQSBackend.change_message_visibility = change_message_visibility
    for index, name in enumerate(LAGGED_COUNTS, start=1):
        sim.true_counts.append(getattr(Queue, name))
        setattr(Queue, name, property(lambda queue, index=index: sim.lagged(queue, index)))
    threading.Thread(target=sim.sample_queues, args=(threading.Event(),), name="sqs-lag", daemon=True).start()


def install_new_queues(sim):
    """A new queue unusable for its first `queue_ready` seconds (but to GetQueueUrl), also as a
    dead-letter target."""
    from moto.sqs.exceptions import QueueDoesNotExist, SQSException
    from moto.sqs.models import Queue, SQSBackend

    queue_constructor, queue_getter, url_getter = Queue.__init__, SQSBackend.get_queue, SQSBackend.get_queue_url
    dlq_setup = Queue._setup_dlq

    def queue_init(self, *args, **kwargs):
        self.sim_created = time.monotonic()
        queue_constructor(self, *args, **kwargs)

    def young(queue):
        return time.monotonic() - getattr(queue, "sim_created", -math.inf) < sim.t["queue_ready"]

    def get_queue(self, queue_name):
        queue = queue_getter(self, queue_name)
        if young(queue) and not getattr(sim.request, "queue_url", False):
            sim.record(
                "UseQueue", [], refused=f"{queue_name} created {time.monotonic() - queue.sim_created:.2f} s ago", queue=queue_name
            )
            raise QueueDoesNotExist()
        return queue

    def get_queue_url(self, queue_name):
        sim.request.queue_url = True
        try:
            return url_getter(self, queue_name)
        finally:
            sim.request.queue_url = False

    def setup_dlq(self, policy):
        before = (getattr(self, "redrive_policy", None), getattr(self, "dead_letter_queue", None))
        dlq_setup(self, policy)
        target = self.dead_letter_queue
        if target is not None and young(target):
            self.redrive_policy, self.dead_letter_queue = before  # refused: nothing changes
            sim.record("UseQueue", [], refused=f"dead-letter target {target.name} just created", queue=self.name)
            raise SQSException(
                "InvalidParameterValue",
                f"Value {json.dumps(policy) if isinstance(policy, dict) else policy} "
                "for parameter RedrivePolicy is invalid. Reason: Dead-letter target does not exist.",
            )

    Queue.__init__ = queue_init
    Queue._setup_dlq = setup_dlq
    SQSBackend.get_queue = get_queue
    SQSBackend.get_queue_url = get_queue_url


AL2023_ROOT = "/dev/xvda"


def image_gb(image):
    """The size of an image's root snapshot (moto's images are all 15 GB unless made here)."""
    return getattr(image, "sim_root_gb", 15)


def install_consistency(sim):
    """New instances are invisible to describe calls, and calls naming them, for `describe_lag` s."""
    from moto.ec2.models.instances import InstanceBackend

    all_reservations = InstanceBackend.all_reservations

    def visible_reservations(self, filters=None):
        reservations = []
        for reservation in all_reservations(self, filters):  # copies: their instance lists are ours to cut
            if any(sim.hidden(i) for i in reservation.instances):
                reservation.instances = [i for i in reservation.instances if not sim.hidden(i)]
            if reservation.instances:
                reservations.append(reservation)
        return reservations

    InstanceBackend.all_reservations = visible_reservations


def install_images(sim):
    """Images as large as their instance's root volume; their snapshots in use for a while after
    DeregisterImage, or deleted by it with DeleteAssociatedSnapshots."""
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.amis import Ami, AmiBackend
    from moto.ec2.models.elastic_block_store import EBSBackend
    from moto.ec2.responses.amis import AmisResponse
    from moto.ec2.utils import generic_filter

    create_image, deregister_response = AmiBackend.create_image, AmisResponse.deregister_image
    delete_snapshot, mappings = EBSBackend.delete_snapshot, Ami.block_device_mappings.fget
    describe_snapshots = EBSBackend.describe_snapshots
    released = {}  # snapshot id -> (monotonic time it may be deleted, its image)
    listed = {}  # snapshot id deleted -> (monotonic time until it is still listed, the snapshot)

    def create_sized_image(self, instance_id, *args, **kwargs):
        image = create_image(self, instance_id, *args, **kwargs)
        instance = self.get_instance(instance_id)
        sizes = {device: volume.size for device, volume in instance.block_device_mapping.items()}
        # Amazon Linux 2023's root device (moto names every root /dev/sda1, and the volume mapped
        # at launch /dev/xvda).
        image.root_device_name = AL2023_ROOT
        image.sim_root_gb = sizes.get(AL2023_ROOT) or sizes.get(instance.root_device_name) or 15
        return image

    def block_device_mappings(image):
        found = mappings(image)
        for mapping in found:
            mapping["Ebs"]["VolumeSize"] = image_gb(image)
        return found

    def deregister_image(self):
        image_id, delete = self._get_param("ImageId"), self._get_bool_param("DeleteAssociatedSnapshots", False)
        snapshots = [s for s in self.ec2_backend.snapshots.values() if s.from_ami == image_id]
        result = deregister_response(self)
        for snapshot in snapshots:
            if delete:
                self.ec2_backend.snapshots.pop(snapshot.id, None)
                listed[snapshot.id] = (time.monotonic() + sim.t["snapshot_listing_lag"], snapshot)
            else:
                released[snapshot.id] = (time.monotonic() + sim.t["snapshot_release"], image_id)
        sim.record("DeregisterImage", [], image=image_id, snapshots=[s.id for s in snapshots], deleted=delete)
        return result

    def patched_delete_snapshot(self, snapshot_id):
        until, image_id = released.get(snapshot_id, (0, None))
        if time.monotonic() < until:
            sim.record("DeleteSnapshot", [], refused=f"{snapshot_id} in use by {image_id}")
            raise EC2ClientError("InvalidSnapshot.InUse", f"The snapshot {snapshot_id} is currently in use by {image_id}")
        snapshot = self.snapshots.get(snapshot_id)
        deleted = delete_snapshot(self, snapshot_id)  # InvalidSnapshot.NotFound for one deleted already
        listed[snapshot_id] = (time.monotonic() + sim.t["snapshot_listing_lag"], snapshot)
        return deleted

    def patched_describe_snapshots(self, snapshot_ids=None, filters=None):
        """moto's, with the snapshots deleted moments ago still listed (an id asked for by name is not)."""
        found = describe_snapshots(self, snapshot_ids, filters)
        if snapshot_ids:
            return found
        now = time.monotonic()
        ghosts = [
            snapshot
            for until, snapshot in list(listed.values())
            if until > now and snapshot is not None and snapshot.id not in self.snapshots
        ]
        return found + (generic_filter(filters, ghosts) if filters else ghosts)

    def patched_create_image(self, instance_id, *args, **kwargs):
        image = create_sized_image(self, instance_id, *args, **kwargs)
        image.state = "pending"
        later(sim.t["image_create"], lambda: setattr(image, "state", "available"))
        sim.record("CreateImage", [instance_id], image=image.id)
        return image

    AmiBackend.create_image = patched_create_image
    Ami.block_device_mappings = property(block_device_mappings)
    AmisResponse.deregister_image = deregister_image
    EBSBackend.delete_snapshot = patched_delete_snapshot
    EBSBackend.describe_snapshots = patched_describe_snapshots


def install_dynamodb(sim):
    """Tables CREATING, then ACTIVE; DELETING, then gone; items only while not CREATING."""
    from moto.dynamodb.exceptions import DeletionProtectedException, ResourceInUseException, ResourceNotFoundException
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    create_table, describe = DynamoDBBackend.create_table, Table.describe

    def status(table):
        return getattr(table, "sim_status", "ACTIVE")

    def patched_create_table(self, name, *args, **kwargs):
        table = create_table(self, name, *args, **kwargs)  # refuses a name in self.tables: DELETING ones too
        table.sim_status = "CREATING"
        later(sim.t["table_create"], lambda: status(table) == "CREATING" and setattr(table, "sim_status", "ACTIVE"))
        sim.record("CreateTable", [], table=name)
        return table

    def delete_table(self, name):
        table = self.get_table(name)
        if status(table) == "CREATING":
            sim.record("DeleteTable", [], table=name, refused="CREATING")
            raise ResourceInUseException(f"Attempt to change a resource which is still in use: Table is being created: {name}")
        if table.deletion_protection_enabled:
            raise DeletionProtectedException(name)
        if status(table) != "DELETING":
            table.sim_status = "DELETING"
            later(sim.t["table_delete"], lambda: self.tables.get(table.name) is table and self.tables.pop(table.name))
            sim.record("DeleteTable", [], table=name)
        return table

    def described(self, base_key="TableDescription"):
        found = describe(self, base_key)
        found[base_key]["TableStatus"] = status(self)
        return found

    def active_only(method):
        def patched(self, table_name, *args, **kwargs):
            table = self.tables.get(table_name)
            if table is not None and status(table) == "CREATING":
                raise ResourceNotFoundException()
            return method(self, table_name, *args, **kwargs)

        return patched

    DynamoDBBackend.create_table = patched_create_table
    DynamoDBBackend.delete_table = delete_table
    Table.describe = described
    for name in ("get_item", "put_item", "update_item", "delete_item", "query", "scan"):
        setattr(DynamoDBBackend, name, active_only(getattr(DynamoDBBackend, name)))


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


def install_ebs_key():
    """GetEbsDefaultKmsKeyId, with alias/aws/ebs managed by AWS (moto makes it a customer key)."""
    from moto.core.responses import ActionResult
    from moto.ec2.responses.elastic_block_store import ElasticBlockStore

    def get_ebs_default_kms_key_id(self):
        backend = self.ec2_backend
        if not backend.default_kms_key_id:
            backend._create_default_encryption_key()
        awsiam.aws_managed_ebs_key(backend)
        return ActionResult({"KmsKeyId": backend.default_kms_key_id})

    ElasticBlockStore.get_ebs_default_kms_key_id = get_ebs_default_kms_key_id


def serve_as_agent(state_dir, instance_id):
    """Mark `instance_id` as one whose Run Commands the local stack runs and reports."""
    path = state_dir / INVOCATIONS_DIR / f"{instance_id}.agent"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def report_invocation(state_dir, command_id, status, error=""):
    """As an instance's SSM agent reports a Run Command's end: `status` (Success, Failed) and the
    end of its standard error."""
    path = state_dir / INVOCATIONS_DIR / command_id
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"status": status, "error": error}))


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
            served = (reports / f"{instance_id}.agent").exists()
            outcome = {"status": "InProgress" if served else "Success", "error": ""}
        return dict(
            invocation,
            Status=outcome["status"],
            StatusDetails=outcome["status"],
            StandardErrorContent=outcome["error"],
            ResponseCode={"Success": 0, "InProgress": -1}.get(outcome["status"], 1),
        )

    Command.get_invocation = get_invocation
