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
- RunInstances refuses an instance profile created (or given its role) less than
  `profile_propagation` seconds ago, with EC2's "Invalid IAM Instance Profile name".
- SQS's ApproximateNumberOf* attributes report the queue as it was `sqs_count_lag` seconds ago.
- CreateQueue refuses a name deleted less than `queue_name_reuse` seconds ago (QueueDeletedRecently).
- A message's visibility may be extended to at most 12 hours after the receive that gave its
  receipt handle (ChangeMessageVisibility reference); moto counts them from when it was sent, so
  that a message older than 12 hours could never be hidden again.
- DeleteSecurityGroup is refused (DependencyViolation) while an instance not yet terminated uses it.
- Service Quotas answers for the On-Demand Standard vCPU quota (moto knows only VPC quotas), with
  EC2_STANDARD_VCPUS.

Each default below is AWS's documented figure or a public measurement; the README names the source
of each. FR_SIMULATE_TIME_SCALE multiplies them all (the tests use a small fraction). Every EC2
state-change call, and every refusal, is journalled as a JSON line in FR_STATE_DIR/simulation.jsonl,
so that tests can check what was asked of EC2 and when.
"""
import copy
import json
import threading
import time
import weakref
from collections import deque

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
}
STATE_CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}
# EC2 refuses these calls for an instance in these states.
REFUSED = {
    "StartInstances": ("stopping", "shutting-down", "terminated"),
    "StopInstances": ("pending", "shutting-down", "terminated"),
}
LAGGED_COUNTS = ("approximate_number_of_messages_delayed", "approximate_number_of_messages_not_visible",
                 "approximate_number_of_messages")
JOURNAL_NAME = "simulation.jsonl"
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

    def record(self, action, instances, refused=None, hibernate=None):
        entry = {"at": time.time(), "action": action, "instances": instances, "refused": refused}
        if hibernate is not None:
            entry["hibernate"] = hibernate
        with self._lock:
            self._journal.write(json.dumps(entry) + "\n")

    def move(self, instance, through, to, delay):
        """Put `instance` in state `through` now and in `to` after `delay` s, unless it moves again first."""
        instance.sim_generation = generation = getattr(instance, "sim_generation", 0) + 1
        set_state(instance, through)

        def arrive():
            if instance.sim_generation == generation:
                set_state(instance, to)

        timer = threading.Timer(delay, arrive)
        timer.daemon = True
        timer.start()

    def check(self, action, instances):
        """Refuse the whole call, as EC2 does, when any instance is in a state EC2 refuses it for."""
        from moto.ec2.exceptions import EC2ClientError

        for instance in instances:
            state = instance._state.name
            if state in REFUSED[action]:
                self.record(action, [i.id for i in instances], refused=f"{instance.id} is {state}")
                verb = "started" if action == "StartInstances" else "stopped"
                raise EC2ClientError("IncorrectInstanceState",
                                     f"The instance '{instance.id}' is not in a state from which it can be {verb}.")

    def check_hibernation(self, instances):
        """Refuse the whole hibernation, as EC2 does, when an instance was not launched for it."""
        from moto.ec2.exceptions import EC2ClientError

        for instance in instances:
            if str((instance.hibernation_options or {}).get("Configured")).lower() != "true":
                self.record("StopInstances", [i.id for i in instances], refused=f"{instance.id} not configured",
                            hibernate=True)
                raise EC2ClientError("UnsupportedHibernationConfiguration",
                                     "The instance can't be hibernated because it was not configured at launch "
                                     f"for hibernation: {instance.id}")

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
    from moto.ec2.exceptions import DependencyViolationError, InvalidParameterValue
    from moto.ec2.models.instances import Instance, InstanceBackend, StateReason
    from moto.ec2.responses.instances import InstanceResponse
    from moto.ec2.models.security_groups import SecurityGroupBackend
    from moto.iam.models import IAMBackend
    from moto.servicequotas.models import ServiceQuotasBackend
    from moto.core.utils import unix_time_millis
    from moto.sqs.exceptions import ReceiptHandleIsInvalid, SQSException
    from moto.sqs.models import MAXIMUM_VISIBILITY_TIMEOUT, Message, Queue, SQSBackend

    sim = Simulation(scale, state_dir)
    original = {name: getattr(Instance, name) for name in ("__init__", "start", "stop", "terminate")}
    run_instances = InstanceBackend.run_instances

    def instance_init(self, *args, **kwargs):
        original["__init__"](self, *args, **kwargs)
        sim.move(self, "pending", "running", sim.t["pending"])

    def patched_run_instances(self, image_id, count, user_data, security_group_names, **kwargs):
        profile = kwargs.get("iam_instance_profile_name")
        if profile and sim.profile_is_new(profile):
            sim.record("RunInstances", [], refused=f"instance profile {profile} not yet propagated")
            raise InvalidParameterValue(
                f"Value ({profile}) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name")
        reservation = run_instances(self, image_id, count, user_data, security_group_names, **kwargs)
        sim.record("RunInstances", [i.id for i in reservation.instances])
        return reservation

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
                    original[method](instance)
                    if hibernate:
                        instance.state_reason = StateReason("Client.UserInitiatedHibernate: User initiated hibernate",
                                                            "Client.UserInitiatedHibernate")
                    sim.move(instance, through, to, sim.t[timing])
                changed.append((instance, previous))
            sim.record(action, instance_ids, hibernate=hibernate or None)
            return changed
        return change

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

    def delete_security_group(self, name=None, group_id=None):
        group = self.get_security_group_by_name_or_id(group_id or name)
        users = [i.id for i in self.all_instances() if i._state.name != "terminated"
                 and group is not None and group.id in [g.id for g in i.security_groups]]
        if users:
            raise DependencyViolationError(f"resource {group.id} has a dependent object")
        return delete_group(self, name=name, group_id=group_id)

    def profile_changed(method):
        def patched(self, profile_name, *args, **kwargs):
            result = method(self, profile_name, *args, **kwargs)
            sim.profiles_changed[profile_name] = time.monotonic()
            return result
        return patched

    def queue_init(self, *args, **kwargs):
        queue_constructor(self, *args, **kwargs)
        self.sim_history = deque()
        sim.queues.add(self)

    def create_queue(self, name, *args, **kwargs):
        deleted = sim.queues_deleted.get((self.account_id, self.region_name, name))
        if name not in self.queues and deleted and time.monotonic() - deleted < sim.t["queue_name_reuse"]:
            raise SQSException("QueueDeletedRecently",
                               "You must wait 60 seconds after deleting a queue before you can create "
                               "another queue with the same name.")
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
                    raise SQSException("InvalidParameterValue",
                                       f"Value {visibility_timeout} for parameter VisibilityTimeout is invalid. Reason: "
                                       f"Total VisibilityTimeout for the message is beyond the limit "
                                       f"[{MAXIMUM_VISIBILITY_TIMEOUT} seconds]")
                message.change_visibility(visibility_timeout)
                if message.visible and message in queue.pending_messages:
                    queue.pending_messages.remove(message)
                return
        raise ReceiptHandleIsInvalid

    def get_service_quota(self, service_code, quota_code):
        if (service_code, quota_code) == ("ec2", VCPU_QUOTA_CODE):
            return {"ServiceCode": "ec2", "QuotaCode": quota_code, "Value": EC2_STANDARD_VCPUS, "Unit": "None",
                    "QuotaName": "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"}
        return quota_getter(self, service_code, quota_code)

    quota_getter = ServiceQuotasBackend.get_service_quota
    ServiceQuotasBackend.get_service_quota = get_service_quota
    delete_group = SecurityGroupBackend.delete_security_group
    queue_constructor, queue_creator, queue_deleter = Queue.__init__, SQSBackend.create_queue, SQSBackend.delete_queue
    message_received = Message.mark_received
    stop_response = InstanceResponse.stop_instances
    InstanceResponse.stop_instances = stop_instances_response
    Instance.__init__ = instance_init
    Instance.terminate = terminate
    InstanceBackend.run_instances = patched_run_instances
    InstanceBackend.start_instances = state_change("StartInstances", "stopped", "start", "pending", "running", "pending")
    InstanceBackend.stop_instances = state_change("StopInstances", "running", "stop", "stopping", "stopped", "stopping")
    SecurityGroupBackend.delete_security_group = delete_security_group
    IAMBackend.create_instance_profile = profile_changed(IAMBackend.create_instance_profile)
    IAMBackend.add_role_to_instance_profile = profile_changed(IAMBackend.add_role_to_instance_profile)
    Queue.__init__ = queue_init
    SQSBackend.create_queue = create_queue
    SQSBackend.delete_queue = delete_queue
    Message.mark_received = mark_received
    SQSBackend.change_message_visibility = change_message_visibility
    for index, name in enumerate(LAGGED_COUNTS, start=1):
        sim.true_counts.append(getattr(Queue, name))
        setattr(Queue, name, property(lambda queue, index=index: sim.lagged(queue, index)))
    threading.Thread(target=sim.sample_queues, args=(threading.Event(),), name="sqs-lag", daemon=True).start()
    return sim
