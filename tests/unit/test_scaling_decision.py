import unittest

from autoscaler import desired, work
from core import settings
from scaling.pool import hibernation_unready, missing, plan


class DesiredTest(unittest.TestCase):
    def test_desired_instances_follow_the_work_within_max_grace_and_floor(self):
        # (visible, in_flight, running, max[, idle seconds, grace, floor]) -> desired
        cases = [
            ((0, 0, 0, 15), 0, "empty: nothing runs"),
            ((0, 0, 7, 15), 0, "empty with instances up: all stop"),
            ((100, 0, 0, 15), 15, "burst from zero: capped at max"),
            ((3, 0, 0, 15), 3, "a little work: that many"),
            ((0, 4, 4, 15), 4, "in flight only: busy instances keep running"),
            ((0, 4, 10, 15), 4, "in flight only: idle ones stop"),
            ((2, 3, 15, 15), 15, "messages waiting: no running instance stops"),
            ((2, 3, 20, 15), 15, "more running than max: back to max"),
            ((40, 40, 15, 15), 15, "max cap"),
            ((5, 0, 5, 15), 5, "pending starts count as running: no more to start"),
            ((1, 0, 0, 1), 1, "a pool of one"),
            ((0, 0, 3, 15, 0.2, 0.5), 3, "work gone for less than the grace: keep them"),
            ((0, 0, 3, 15, 0.5, 0.5), 0, "work gone for the grace: stop them all"),
            ((0, 0, 20, 15, 0.1, 0.5), 15, "within the grace, still never more than max"),
            ((0, 1, 3, 15, 0.0, 0.5), 1, "the grace is only for no work at all"),
            ((0, 0, 0, 15, 9.0, 0.5, 1), 1, "warm floor: one runs with no work"),
            ((0, 0, 15, 15, 9.0, 0.5, 2), 2, "warm floor: back to the floor, not to 0"),
            ((0, 0, 5, 15, 0.1, 0.5, 2), 5, "warm floor: within the grace, keep them"),
            ((100, 0, 1, 15, 0.0, 0.5, 1), 15, "warm floor: a burst still reaches max"),
            ((3, 0, 0, 15, 0.0, 0.5, 5), 5, "warm floor above the work"),
        ]
        for args, expected, why in cases:
            with self.subTest(why, args=args):
                self.assertEqual(desired(*args), expected)


class WorkTest(unittest.TestCase):
    def test_work_is_the_web_tiers_exact_count_less_the_requests_whose_messages_sqs_no_longer_shows(self):
        # (waiting, of them queued longer than SQS's lag, SQS visible, SQS in flight) -> (visible, in flight)
        cases = [
            ((None, 0, 7, 3), (7, 3), "no web tier here: SQS is all there is"),
            ((5, 0, 0, 0), (5, 0), "a burst SQS does not show yet: the web tier's count"),
            ((0, 0, 4, 6), (0, 0), "all answered, SQS still shows the burst: done"),
            ((5, 5, 2, 3), (2, 3), "agreeing counts: SQS says how many a worker holds"),
            ((3, 0, 0, 9), (0, 3), "tail of a burst: never more held than waiting"),
            ((0, 0, 122, 0), (0, 0), "SQS above the web tier: a crashed web tier's, nobody waits"),
            ((2, 2, 122, 1), (1, 1), "orphans beside known work: only the known work"),
            ((24, 24, 0, 0), (0, 0), "queued long ago, SQS shows none: messages gone"),
            ((25, 24, 0, 0), (1, 0), "messages gone and a new upload: the new one"),
            ((24, 24, 10, 4), (10, 4), "some gone: those SQS still shows"),
            ((24, 10, 0, 0), (14, 0), "only the long-queued can be taken for gone"),
            ((0, 1, 0, 0), (0, 0), "counts of two moments: never below no work"),
        ]
        for args, expected, why in cases:
            with self.subTest(why, args=args):
                self.assertEqual(work(*args), expected)


def member(number, state):
    return {"id": f"i-{number}", "name": f"app-tier-instance-{number}", "state": state}


class PlanTest(unittest.TestCase):
    def test_the_plan_starts_the_lowest_stopped_members_and_stops_the_highest_running(self):
        # (states of members 1.., target) -> (numbers to start, numbers to stop)
        cases = [
            (["stopped"] * 4, 0, [], [], "idle and stopped: nothing"),
            (["stopped"] * 4, 2, [1, 2], [], "start the lowest numbers first"),
            (["running", "stopped", "stopped"], 2, [2], [], "only the difference"),
            (["stopping", "stopped", "stopped"], 2, [2, 3], [], "a stopping member cannot be started yet"),
            (["stopping", "stopping"], 2, [], [], "none startable: wait for a later step"),
            (["running"] * 3, 1, [], [2, 3], "stop the highest numbers first"),
            (["running", "pending", "running"], 0, [], [1, 3], "a pending member cannot be stopped yet"),
            (["pending", "pending"], 0, [], [], "none stoppable: wait until they run"),
            (["running", "running", "pending"], 1, [], [1, 2], "surplus taken from running ones only"),
            (["pending", "running"], 2, [], [], "pending counts as running"),
            (["stopped", "running"], 1, [], [], "already there"),
            (["stopping"] * 2 + ["stopped"] * 2, 2, [3, 4], [], "a burst while members stop: spares start"),
            (["running"] * 2 + ["stopped"] * 2, 2, [], [], "spares are never more than max: target is capped"),
        ]
        for states, target, start, stop, why in cases:
            with self.subTest(why, states=states, target=target):
                members = [member(n, state) for n, state in enumerate(states, start=1)]
                self.assertEqual(plan(members, target), ([f"i-{n}" for n in start], [f"i-{n}" for n in stop]))

    def test_hibernated_members_start_first(self):
        members = [member(n, "stopped") for n in range(1, 5)]
        self.assertEqual(plan(members, 2, warm={"i-3", "i-4"}), (["i-3", "i-4"], []))
        self.assertEqual(plan(members, 3, warm={"i-4"}), (["i-4", "i-1", "i-2"], []))

    def test_missing_members_by_name(self):
        self.assertEqual(missing([member(1, "stopped"), member(3, "running")], 4), ["app-tier-instance-2", "app-tier-instance-4"])


class HibernationReadinessTest(unittest.TestCase):
    def test_a_member_is_hibernated_only_once_ec2_says_the_guest_is_ready(self):
        # The defaults: FR_HIBERNATE_AFTER_LAUNCH=120, FR_HIBERNATE_AFTER_START=60; EC2's times are
        # whole seconds, so a second is allowed for.
        config = settings.load_config({})
        now = 1_000_000.0
        cases = [
            ((True, 3600, 600), None, "launched and started long ago: ready"),
            ((False, 3600, 600), "not launched for hibernation", "a plain member"),
            ((True, 60, 60), "launched 59 s ago, under FR_HIBERNATE_AFTER_LAUNCH=120", "the agent still sets up"),
            ((True, 3600, 20), "started 19 s ago, under FR_HIBERNATE_AFTER_START=60", "resumed moments ago"),
            ((True, 3600, 60.5), "started 60 s ago, under FR_HIBERNATE_AFTER_START=60", "a second is allowed for"),
            ((True, 3600, 61.5), None, "past it"),
        ]
        for (hibernates, launched_ago, started_ago), expected, why in cases:
            with self.subTest(why):
                member = dict(hibernates=hibernates, launched=now - launched_ago, started=now - started_ago)
                self.assertEqual(hibernation_unready(member, now, config), expected)


if __name__ == "__main__":
    unittest.main()
