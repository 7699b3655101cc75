import unittest

from autoscaler import RecentMost, desired, work
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
    def test_work_is_the_web_tiers_exact_count_unless_sqs_has_seen_more_for_longer_than_its_lag(self):
        # (waiting, SQS visible, SQS in flight, SQS above waiting for s, lag) -> (visible, in flight)
        cases = [
            ((None, 7, 3, 0, 60), (7, 3), "no web tier here: SQS is all there is"),
            ((5, 0, 0, 0, 60), (5, 0), "a burst SQS does not show yet: the web tier's count"),
            ((0, 4, 6, 10, 60), (0, 0), "all answered, SQS still shows the burst: done"),
            ((5, 2, 3, 0, 60), (2, 3), "agreeing counts: SQS says how many a worker holds"),
            ((3, 0, 9, 5, 60), (0, 3), "tail of a burst: never more held than waiting"),
            ((0, 4, 0, 61, 60), (4, 0), "SQS above the web tier longer than its lag: work someone else sent"),
            ((2, 6, 1, 61, 60), (6, 1), "unknown work on top of known work: the larger counts"),
            ((0, 4, 0, 59, 60), (0, 0), "not yet longer than the lag: still taken for lag"),
        ]
        for args, expected, why in cases:
            with self.subTest(why, args=args):
                self.assertEqual(work(*args), expected)


class RecentMostTest(unittest.TestCase):
    def test_the_largest_value_of_the_last_span(self):
        # The web tier's waiting count, as the autoscaler notes it: SQS's counts up to 60 s old are
        # explained by any of it, not only by the count of now; a count noted before the last 60 s is
        # the count at their start, until the next one.
        recent = RecentMost(60)
        notes = [(0, 100), (30, 40), (59, 0), (61, 0), (91, 5), (95, 0), (200, 0)]
        self.assertEqual([recent.add(t, v) for t, v in notes], [100, 100, 100, 100, 40, 40, 0])


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
