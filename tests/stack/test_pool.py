"""pool.stop against the AWS-like stack: which members hibernate, and what EC2 and the guest then do."""

import math
import time
import unittest

from autoscaler import Autoscaler
from core import guest, settings
from deploy.provision import provision
from scaling import pool
from simulation import awslike
from tests.support import DESCRIBE_EVERY, NO_GUESTS, aws, start_moto, state_dir, wait_until

# The guest's agent is set up 1.2 s after launch (120 s at AWS's timings) and a stop takes 0.3 s.
TIME_SCALE = 0.01
SECONDS = awslike.timings(TIME_SCALE)


class StopTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        endpoint = start_moto(cls, FR_SIMULATE_TIME_SCALE=TIME_SCALE)
        cls.config = settings.load_config(
            {
                "FR_PREFIX": "stop",
                "FR_STATE_DIR": str(cls.moto_state),
                "FR_ENDPOINT_URL": endpoint,
                "FR_AMI_ID": "ami-test",
                "FR_MAX_INSTANCES": "4",
                "FR_SPARE_INSTANCES": "0",
                "FR_HIBERNATE_AFTER_LAUNCH": str(120 * TIME_SCALE),
                "FR_HIBERNATE_AFTER_RESUME": str(32 * TIME_SCALE),
                **NO_GUESTS,
            }
        )
        provision(cls.config, lambda service: aws(endpoint, service))
        cls.ec2, cls.sqs = aws(endpoint, "ec2"), aws(endpoint, "sqs")

    def setUp(self):
        self.members = pool.describe(self.ec2, self.config)
        self.ids = [i["id"] for i in self.members]
        pool.wait_for(self.ec2, self.ids, ["stopped"], 10)

    def start_all(self):
        """Start every member, and, as each guest's worker does (core/guest.py; no worker runs here),
        mark it ready once the stack says its boot and its agent's boot work are done; wait until
        each is ready to hibernate by what EC2 says."""
        self.ec2.start_instances(InstanceIds=self.ids)
        pool.wait_for(self.ec2, self.ids, ["running"], 10)
        boots = awslike.guest_boots(awslike.read_journal(self.moto_state))
        up_at = time.time() + max(boot + agent for boot, agent in (boots[i] for i in self.ids))
        wait_until(lambda: time.time() >= up_at, 10, what="the guests up, by the stack's timings")
        marked = time.time()
        self.ec2.create_tags(Resources=self.ids, Tags=[{"Key": guest.GUEST_TAG, "Value": guest.mark(guest.READY, marked)}])
        # EC2's LaunchTime is whole seconds: a start in the same second would take this mark for its own
        # (on AWS a stop and a start take far longer; here a stop takes a fraction of one).
        wait_until(lambda: time.time() >= math.floor(marked) + 1, 2, what="the next second")
        wait_until(
            lambda: (
                not any(pool.hibernation_unready(d, time.time(), self.config) for d in pool.details(self.ec2, self.ids).values())
            ),
            10,
            what="ready",
        )

    def reasons(self):
        return {
            i: d["StateReason"]["Code"]
            for r in self.ec2.describe_instances(InstanceIds=self.ids)["Reservations"]
            for d in r["Instances"]
            for i in [d["InstanceId"]]
        }

    def test_one_member_refused_by_ec2_stops_plainly_and_the_others_hibernate(self):
        self.start_all()
        refused = self.ids[2]

        def refuse_one(params, **_):
            # As EC2 refuses a hibernation it cannot do: the whole call, for any one instance named.
            if params.get("Hibernate") and refused in params["InstanceIds"]:
                raise self.ec2.exceptions.ClientError(
                    {"Error": {"Code": "UnsupportedHibernationConfiguration", "Message": refused}}, "StopInstances"
                )

        self.ec2.meta.events.register("before-parameter-build.ec2.StopInstances", refuse_one)
        self.addCleanup(self.ec2.meta.events.unregister, "before-parameter-build.ec2.StopInstances", refuse_one)
        steered = pool.Pool(self.ec2, self.config)
        with self.assertLogs("pool", "INFO") as logged:
            steered.stop(self.ids, self.members)
        pool.wait_for(self.ec2, self.ids, ["stopped"], 10)
        hibernated = "Client.UserInitiatedHibernate"
        self.assertEqual(self.reasons(), {i: "Client.UserInitiatedShutdown" if i == refused else hibernated for i in self.ids})
        (line,) = logged.output
        self.assertIn(
            f"event=stopped_plainly instance={refused} name=app-tier-instance-3 "
            'reason="refused by EC2: UnsupportedHibernationConfiguration"',
            line,
        )
        self.assertEqual(steered.warm, set(self.ids) - {refused}, "only the hibernated start first")

    def test_members_resumed_moments_ago_or_not_yet_up_stop_plainly_and_say_why(self):
        self.start_all()
        self.ec2.stop_instances(InstanceIds=self.ids[:2], Hibernate=True)
        pool.wait_for(self.ec2, self.ids[:2], ["stopped"], 10)
        self.ec2.start_instances(InstanceIds=self.ids[:2])
        pool.wait_for(self.ec2, self.ids[:2], ["running"], 10)
        # The first one's guest says it resumed (as its worker does); the second's has said nothing yet.
        resumed = [{"Key": guest.GUEST_TAG, "Value": guest.mark(guest.RESUMED, time.time())}]
        self.ec2.create_tags(Resources=self.ids[:1], Tags=resumed)
        steered = pool.Pool(self.ec2, self.config)
        with self.assertLogs("pool", "INFO") as logged:
            steered.stop(self.ids, self.members)
        pool.wait_for(self.ec2, self.ids, ["stopped"], 10)
        self.assertEqual(
            [e for e in awslike.read_journal(self.moto_state) if e["action"] == "HibernationDropped"],
            [],
            "asked of a guest that had just resumed, the agent would have dropped it",
        )
        self.assertEqual(
            [line.split(" reason=")[0].rsplit(" ", 2)[1:] for line in logged.output],
            [[f"instance={i}", f"name=app-tier-instance-{n}"] for n, i in enumerate(self.ids[:2], 1)],
        )
        self.assertIn('reason="resumed 0 s ago, under FR_HIBERNATE_AFTER_RESUME=0.32"', logged.output[0])
        self.assertIn('reason="its guest has not said it is up since its start', logged.output[1])
        self.assertEqual(set(self.reasons().values()) - {"Client.UserInitiatedShutdown"}, {"Client.UserInitiatedHibernate"})

    def test_a_member_hibernated_near_ec2s_60_days_is_started_to_be_stopped_plainly(self):
        self.start_all()
        self.ec2.stop_instances(InstanceIds=self.ids[:1], Hibernate=True)
        self.ec2.stop_instances(InstanceIds=self.ids[1:])
        pool.wait_for(self.ec2, self.ids, ["stopped"], 10)
        scaler = Autoscaler(self.config, self.sqs, self.ec2)
        scaler.pool.wall_clock = lambda: time.time() + pool.HIBERNATION_REFRESH_DAYS * 86400
        with self.assertLogs("pool", "INFO") as logged:
            decision = scaler.step()
        self.assertEqual(decision["started"], 1)
        self.assertIn(f"event=hibernation_refresh instance={self.ids[0]}", "\n".join(logged.output))
        self.assertIn(pool.instance_states(self.ec2, self.ids[:1])[self.ids[0]], pool.ACTIVE_STATES)
        # No work: once it runs, it is stopped, plainly (it has just started), and stays stopped.
        wait_until(
            lambda: (
                scaler.step()
                and self.reasons()[self.ids[0]] == "Client.UserInitiatedShutdown"
                and pool.instance_states(self.ec2, self.ids[:1])[self.ids[0]] == "stopped"
            ),
            10,
            what="stopped plainly",
        )
        self.assertEqual(scaler.step()["started"], 0, "started once, not again")

    def test_a_restarted_autoscaler_starts_the_hibernated_member_first(self):
        # Its warm set was in the memory of the process before; EC2's StateReason says it again.
        self.start_all()
        self.ec2.stop_instances(InstanceIds=self.ids[2:3], Hibernate=True)
        self.ec2.stop_instances(InstanceIds=self.ids[:2] + self.ids[3:])
        pool.wait_for(self.ec2, self.ids, ["stopped"], 10)
        self.assertEqual(self.reasons()[self.ids[2]], pool.HIBERNATE_REASON)
        restarted = pool.Pool(self.ec2, self.config)
        started, _ = restarted.resize(restarted.observe(), 1)
        self.assertEqual(started, self.ids[2:3], "the hibernated member, with its model in memory")
        pool.wait_for(self.ec2, started, ["running"], 10)
        self.ec2.stop_instances(InstanceIds=started)


class RestartedRepairTest(unittest.TestCase):
    """Pool repair by an autoscaler restarted moments after its launches, which describe calls do not
    show yet (for 1 s here: AWS's 2 s at half its timings)."""

    def test_an_autoscaler_restarted_before_its_launches_are_seen_launches_no_name_twice(self):
        endpoint = start_moto(self, name="moto-restarted-repair", FR_SIMULATE_TIME_SCALE=0.5)
        state = state_dir("restarted-repair")
        fr = {"FR_PREFIX": "again", "FR_ENDPOINT_URL": endpoint, "FR_MAX_INSTANCES": "2", "FR_STATE_DIR": str(state), **NO_GUESTS}
        provision(settings.load_config(fr), lambda service: aws(endpoint, service))  # no FR_AMI_ID: no pool yet
        config = settings.load_config(dict(fr, FR_AMI_ID="ami-test"))
        ec2, sqs = aws(endpoint, "ec2"), aws(endpoint, "sqs")
        first = Autoscaler(config, sqs, ec2)

        def launched():
            first.pool.observe()
            return [e for e in awslike.read_journal(self.moto_state) if e["action"] == "RunInstances" and e["instances"]]

        # The first launches (once IAM has propagated the new instance profile), then it is gone.
        launches = wait_until(launched, 30, what="members launched")
        self.assertEqual(pool.describe(ec2, config), [], "the launches are not seen yet")
        Autoscaler(config, sqs, ec2).pool.observe()  # its restart: the members look missing
        made = {i for e in awslike.read_journal(self.moto_state) if e["action"] == "RunInstances" for i in e["instances"]}
        wait_until(lambda: len(pool.describe(ec2, config)) >= len(made), 10, DESCRIBE_EVERY, "every instance made seen")
        names = [m["name"] for m in pool.describe(ec2, config)]
        self.assertEqual(len(names), sum(len(e["instances"]) for e in launches))
        self.assertEqual(len(set(names)), len(names), f"a member launched twice: {names}")


if __name__ == "__main__":
    unittest.main()
