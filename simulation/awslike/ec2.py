"""EC2 as the AWS-like stack has it: launches, state changes, eventual consistency."""

import copy
import math
import time

from simulation import awsiam
from simulation.awslike.images import image_gb
from simulation.awslike.sim import HIBERNATE_REASON

# EC2's StateReason code of an instance its guest powered off.
SHUTDOWN_REASON = "Client.InstanceInitiatedShutdown"


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
        sim.boot(self, sim.t["describe_lag"] + sim.t["pending"])

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
            if action == "StopInstances" and getattr(sim.request, "guest", False):  # a power-off: never refused
                return [guest_shutdown(sim, instance, original["stop"]) for instance in instances]
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
        resumed_at after `pending` and the resume; any other boots (sim.boot)."""
        instance.launch_time = utcnow()
        instance.sim_resumed = time.monotonic() + sim.t["pending"] + sim.t["resume"] if resuming else -math.inf
        if not resuming:
            sim.boot(instance, sim.t["pending"])

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
        """moto's StopInstances, with its Hibernate parameter seen (moto ignores it), and a guest's
        power-off told from an API call."""
        sim.request.hibernate = self._get_bool_param("Hibernate", False)
        sim.request.guest = awsiam.is_guest(self.headers)
        try:
            return stop_response(self)
        finally:
            sim.request.hibernate = sim.request.guest = False

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


def guest_shutdown(sim, instance, stop):
    """The guest powered off (awsiam.guest_shutdown): EC2 stops (moto's `stop`) or terminates the
    instance, as its InstanceInitiatedShutdownBehavior says (moto's default, as EC2's for an EBS
    root: stop). (instance, its state before), as moto's state changes return them."""
    from moto.ec2.models.instances import StateReason

    previous = copy.copy(instance._state)
    if previous.name != "running":  # stopping already: nothing more to do
        return instance, previous
    behaviour = instance.instance_initiated_shutdown_behavior
    sim.record("GuestShutdown", [instance.id], behaviour=behaviour)
    if behaviour == "terminate":
        instance.terminate()
        return instance, previous
    stop(instance)
    instance.state_reason = StateReason("Client.InstanceInitiatedShutdown: Instance initiated shutdown", SHUTDOWN_REASON)
    sim.move(instance, "stopping", "stopped", sim.t["stopping"])
    return instance, previous


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
