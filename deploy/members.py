"""The app tier's pool as provisioning makes it: every member launched once, warmed up (booted
until its guest is up, then hibernated: scaling/warming.py) or stopped, in the app tier's own
security group."""

import threading
import time

import common
from core import heartbeat, settings
from deploy.base import INSTANCE_PATIENCE, PROFILE_PATIENCE
from scaling import launching, pool, warming

log = common.EventLog("provision")

# How often the warm-up looks at the members it waits for.
WARM_POLL_SECONDS = 1.0


class PoolSteps:
    """Provisioner's steps for the app tier's pool and its security group."""

    def ensure_pool(self):
        """All FR_MAX_INSTANCES + FR_SPARE_INSTANCES members, stopped. EC2 creates an instance
        `pending` and refuses to stop it until it runs: members are launched in waves of at most
        FR_MAX_INSTANCES (what ensure_vcpus found room for), each wave waited on until it runs, then
        warmed up (FR_WARM_UP: hibernated once its guest will, so that the first burst resumes it)
        or stopped plainly. The waits name the instances
        RunInstances returned, so a member not yet visible to describe is still stopped. Once the
        web host runs, its autoscaler owns the pool: it launches the missing members itself.
        Launching them here too would race it (each sees a name missing and launches one: the name
        twice), so provisioning only says how many are missing."""
        config = self.config
        # Asked before anything is stopped: a running member of an autoscaled pool is at work.
        if self._ours([settings.WEB_HOST_NAME], pool.ACTIVE_STATES):
            missing = pool.missing(pool.describe(self.ec2, config), config.pool_size)
            state = f"{len(missing)} missing" if missing else "exists"
            return (
                state,
                f"{self.pool_what()} (left to the autoscaler on {settings.WEB_HOST_NAME}, which launches missing members)",
            )
        launches, created = launching.Launches(), {}
        while True:
            members = pool.describe(self.ec2, config)
            self._settle([i["id"] for i in members if i["state"] in pool.ACTIVE_STATES])
            launched = launching.repair(self.ec2, config, members, PROFILE_PATIENCE, launches)
            created.update(launched)
            if not launched:
                break
            self._settle(list(launched.values()))
        state = f"created {len(created)}" if created else "exists"
        pool.wait_for(self.ec2, [i["id"] for i in pool.describe(self.ec2, config)], ["stopped"], INSTANCE_PATIENCE)
        return state, self.pool_what()

    def pool_what(self):
        config = self.config
        stopped = "hibernated (warmed up: booted once, until its guest is up)" if warming.enabled(config) else "stopped"
        return (
            f"pool of {config.pool_size} {stopped} {pool.APP_TIER_NAME}-N ({config.max_instances} + "
            f"{config.pool_size - config.max_instances} spare) from {config.ami_id}"
        )

    def warm_up_what(self):
        """The dry run's words for the warm-up: how long each wave of it takes at least."""
        if not warming.enabled(self.config):
            return " (none once the web host runs)"
        return (
            f", each wave warmed up: run until FR_HIBERNATE_AFTER_LAUNCH={self.config.hibernate_after_launch:g} s after its"
            " launch and its guest is up, then hibernated (none once the web host runs)"
        )

    def _settle(self, ids):
        """Wait for the instances `ids` (pending or running) to run, warm them up (FR_WARM_UP) or
        stop them plainly, and wait until they are stopped."""
        if ids:
            pool.wait_for(self.ec2, ids, ["running"], INSTANCE_PATIENCE)
            cold = self._warm_up(ids) if warming.enabled(self.config) else ids
            if cold:
                self.ec2.stop_instances(InstanceIds=cold)
            pool.wait_for(self.ec2, ids, ["stopped"], INSTANCE_PATIENCE)

    def _warm_up(self, ids):
        """Hibernate each of the running members `ids` as soon as its guest will (after the launch
        rule, once its worker has said the agent's boot work is done: pool.hibernation_unready);
        those it gave up on (scaling/warming.py, PATIENCE), to stop plainly. Provisioning steers the
        pool meanwhile: it is heard as the autoscaler is (core/heartbeat.py), so that no member warming
        up, idle, takes itself for one nobody steers."""
        warm_up, cold = warming.Warming(self.config), []
        beat = heartbeat.Beat(self.config, self.sqs, self.sqs.get_queue_url(QueueName=self.config.request_queue)["QueueUrl"])
        warm_up.begin(ids)
        while warm_up.started:
            beat.heard()
            states = pool.instance_states(self.ec2, list(warm_up.started))
            members = [{"id": i, "state": state} for i, state in states.items()]
            ready, overdue = warm_up.due(members, pool.details(self.ec2, list(states)), time.time())
            if ready:
                pool.stop_and_say(self.ec2, ready, self.config)
            cold += overdue
            if warm_up.started:
                threading.Event().wait(WARM_POLL_SECONDS)
        return cold

    def _ours(self, names, states):
        return pool.ours(self.ec2, self.config, names, states)

    def _security_group(self, name, description):
        """The id of our security group `name`, made (no inbound rule; all outbound) when missing."""
        found = self.ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]}])["SecurityGroups"]
        if found:
            return found[0]["GroupId"], "exists"
        return self.ec2.create_security_group(
            GroupName=name,
            Description=description,
            TagSpecifications=[{"ResourceType": "security-group", "Tags": pool.tags(self.config, name)}],
        )["GroupId"], "created"

    def ensure_app_security_group(self):
        """The members' security group: no inbound rule, all outbound (SQS, S3). Not the VPC's
        default group, whose rules a hardened account strips (CIS, Security Hub EC2.2): members
        there could reach nothing, and every upload would wait out its timeout."""
        _, state = self._security_group(launching.app_security_group_name(self.config), "face-rec app tier: no inbound")
        return state
