"""The simulation's state: AWS's timings, the journal, and what the patches share."""

import json
import math
import threading
import time
import weakref

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
    "agent_boot": 10.0,
    "agent_resume_threshold": 30.0,
    "volume_first_read": 4.4,
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


def guest_boots(entries):
    """{instance id: (boot, agent)} of each instance's last GuestBoot in the journal's `entries`."""
    return {e["instances"][0]: (e["boot"], e["agent"]) for e in entries if e["action"] == "GuestBoot"}


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

    def boot(self, instance, after):
        """The guest of `instance` boots once its `pending` ends, `after` s from now: the OS's boot
        (longer on the volume's first boot, whose blocks come from S3: `volume_first_read`), then
        the agent's boot work (`agent_boot`). Journalled as GuestBoot, which the local launcher
        follows (its `boot`: seconds from `running` to the worker's start)."""
        first_read = 0.0 if getattr(instance, "sim_volume_read", False) else self.t["volume_first_read"]
        instance.sim_volume_read = True
        boot = self.t["boot"] + first_read
        instance.sim_guest_up = time.monotonic() + after + boot + self.t["agent_boot"]
        self.record("GuestBoot", [instance.id], boot=round(boot, 3), agent=round(self.t["agent_boot"], 3))

    def guest_drops_hibernation(self, instance):
        """Why the guest's hibernation agent would ignore the sleep button now, or None."""
        now = time.monotonic()
        since_launch = now - getattr(instance, "sim_launched", -math.inf)
        if since_launch < self.t["agent_setup"]:
            return f"launched {since_launch:.2f} s ago: the agent is still setting up its swap file"
        until_up = getattr(instance, "sim_guest_up", -math.inf) - now
        if until_up > 0:
            return f"booting: the guest and its agent's boot work (swap offset, dracut) done in {until_up:.2f} s"
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


def later(delay, action):
    timer = threading.Timer(delay, action)
    timer.daemon = True
    timer.start()
