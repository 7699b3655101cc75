import dataclasses
import tempfile
import threading
import time
import unittest
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock

from autoscaler import desired, pause, wait_for_work, wants_more, work
from core import guest, settings, statefiles
from scaling import warming
from scaling.pool import Pool, hibernation_unready, missing, plan


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


class PauseTest(unittest.TestCase):
    def test_steps_are_an_interval_apart_from_start_to_start_and_one_comes_when_the_grace_ends(self):
        # (step began, now, interval[, idle since, grace]) -> seconds to the next step
        cases = [
            ((10.0, 10.2, 0.5), 0.3, "a step of 0.2 s: the rest of the interval"),
            ((10.0, 10.0, 0.5), 0.5, "an instant step: the interval"),
            ((10.0, 10.7, 0.5), 0.05, "a step slower than the interval: a tenth of it, not none"),
            ((10.0, 10.1, 0.5, 10.1, 0.5), 0.4, "work gone at this step: the interval ends first"),
            ((10.0, 10.1, 0.5, 9.8, 0.5), 0.2, "the grace ends first: the step that stops comes then"),
            ((10.0, 10.1, 0.5, 9.0, 0.5), 0.4, "the grace long over: the interval"),
            ((10.0, 10.1, 0.5, 9.61, 0.5), 0.05, "the grace ends in a moment: not sooner than a tenth"),
        ]
        for args, expected, why in cases:
            with self.subTest(why):
                self.assertAlmostEqual(pause(*args), expected, places=6)


class WakeTest(unittest.TestCase):
    def test_a_step_comes_at_once_only_for_requests_that_want_more_members_than_the_last_gave(self):
        # (web tier's (waiting, long queued), last step's desired and waiting, max) -> step now
        cases = [
            (((1, 0), 0, 0, 15), True, "the first upload after an idle spell"),
            (((0, 0), 0, 0, 15), False, "still no work"),
            (((9, 0), 3, 3, 15), True, "a burst arriving: more than the last step gave"),
            (((3, 0), 3, 3, 15), False, "no more than the last step gave"),
            (((40, 0), 15, 30, 15), False, "the pool at its most already"),
            (((1, 0), 2, 0, 15), False, "the warm floor takes it"),
            (((24, 24), 0, 24, 15), False, "requests seen before (their messages gone): not again"),
            (((25, 24), 0, 24, 15), True, "a new one beside them"),
            ((None, 0, 0, 15), False, "no web tier here: SQS's counts, at the next step"),
            (((1, 0), 0, None, 15), True, "the last step had no web tier's count"),
        ]
        for (web, wanted, waiting, most), expected, why in cases:
            with self.subTest(why):
                self.assertEqual(wants_more(web, {"desired": wanted, "waiting": waiting}, most), expected)
        self.assertFalse(wants_more((5, 0), None, 15), "no step yet: the first one is on its way")

    def test_the_pause_ends_when_the_web_tier_has_new_work_and_not_otherwise(self):
        with tempfile.TemporaryDirectory() as scratch:
            config = settings.load_config({"FR_STATE_DIR": scratch})
            statefiles.write_waiting(config, 0, 0)
            last, stop = {"desired": 0, "waiting": 0}, threading.Event()
            self.addCleanup(stop.set)  # a waiter the upload did not wake ends with the test
            began = time.monotonic()
            wait_for_work(stop, 0.3, config, last)
            self.assertGreaterEqual(time.monotonic() - began, 0.3, "no new work: the whole pause")
            waiter = threading.Thread(target=wait_for_work, args=(stop, 600, config, last))
            waiter.start()
            statefiles.write_waiting(config, 1, 0)
            waiter.join(30)
            self.assertFalse(waiter.is_alive(), "a 600 s pause not ended by an upload")


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

    def test_warm_members_start_before_cold_ones_and_stopping_ones_never(self):
        # (states of members 1.., warm (hibernated) members, target, started): a burst back to back
        # finds the last burst's members stopping, and starts spares, the warm ones first.
        cases = [
            (["stopped"] * 4, {3, 4}, 2, [3, 4], "hibernated first"),
            (["stopped"] * 4, {4}, 3, [4, 1, 2], "then the cold, lowest numbers first"),
            (["stopping"] * 2 + ["stopped"] * 4, {5, 6}, 2, [5, 6], "the burst's members stopping: warm spares"),
            (["stopping"] * 2 + ["stopped"] * 4, {1, 2, 6}, 2, [6, 3], "a stopping member is not started, warm or not"),
            (["running", "stopped", "stopped"], {3}, 2, [3], "one more: the warm one"),
            (["stopped"] * 3, set(), 2, [1, 2], "none warm: lowest numbers"),
        ]
        for states, warm, target, started, why in cases:
            with self.subTest(why):
                members = [member(n, state) for n, state in enumerate(states, start=1)]
                self.assertEqual(plan(members, target, warm={f"i-{n}" for n in warm}), ([f"i-{n}" for n in started], []))

    def test_missing_members_by_name(self):
        self.assertEqual(missing([member(1, "stopped"), member(3, "running")], 4), ["app-tier-instance-2", "app-tier-instance-4"])


class HibernationReadinessTest(unittest.TestCase):
    def test_a_member_is_hibernated_only_once_its_guest_says_it_will(self):
        # The defaults: FR_HIBERNATE_AFTER_LAUNCH=120, FR_HIBERNATE_AFTER_RESUME=32; EC2's times are
        # whole seconds, so a second is allowed for. The mark: the guest's word (core/guest.py), in
        # seconds before `now`; a mark from before the last start is an earlier start's.
        config = settings.load_config({})
        now = 1_000_000.0
        silent = "its guest has not said it is up since its start (booting, or resuming)"
        cases = [
            ((True, 3600, 600, ("ready", 580)), None, "booted long ago, the agent's work done: ready"),
            ((True, 3600, 20, ("ready", 2)), None, "a boot needs no wait once its guest is up"),
            ((False, 3600, 600, ("ready", 580)), "not launched for hibernation", "a plain member"),
            ((True, 60, 60, ("ready", 30)), "launched 59 s ago, under FR_HIBERNATE_AFTER_LAUNCH=120", "the agent sets up"),
            ((True, 3600, 20, None), silent, "never marked: a booting guest"),
            ((True, 3600, 20, ("ready", 900)), silent, "an earlier boot's mark: booting again"),
            ((True, 3600, 20, ("resumed", 900)), silent, "an earlier resume's mark"),
            ((True, 3600, 20, ("ready", 20.5)), silent, "marked before EC2's LaunchTime: an earlier start's"),
            ((True, 3600, 20, ("resumed", 10)), "resumed 10 s ago, under FR_HIBERNATE_AFTER_RESUME=32", "just resumed"),
            ((True, 3600, 40, ("resumed", 31.5)), "resumed 32 s ago, under FR_HIBERNATE_AFTER_RESUME=32", "at the edge"),
            ((True, 3600, 40, ("resumed", 32)), None, "past it"),
            ((True, 3600, 20, ("unable", 2)), "its guest says its hibernation agent is missing or failed this boot", "no agent"),
            ((True, 3600, 20, ("unable", 900)), silent, "an earlier boot's failed agent: booting again"),
        ]
        for (hibernates, launched_ago, started_ago, marked), expected, why in cases:
            with self.subTest(why):
                member = dict(
                    hibernates=hibernates,
                    launched=now - launched_ago,
                    started=now - started_ago,
                    guest=(marked[0], now - marked[1]) if marked else None,
                )
                self.assertEqual(hibernation_unready(member, now, config), expected)

    def test_the_guest_mark_reads_back_and_anything_else_is_no_mark(self):
        tags = [{"Key": "Name", "Value": "app-tier-instance-1"}, {"Key": guest.GUEST_TAG, "Value": guest.mark("ready", 12.5)}]
        self.assertEqual(guest.mark_of(tags), ("ready", 12.5))
        for value in ("", "ready", "ready soon", "booting 12", "resumed 1e3"):
            with self.subTest(value=value):
                expected = ("resumed", 1000.0) if value == "resumed 1e3" else None
                self.assertEqual(guest.mark_of([{"Key": guest.GUEST_TAG, "Value": value}]), expected)
        self.assertIsNone(guest.mark_of([]))

    def test_the_reporter_tags_its_instance_and_tries_again_until_it_can_or_is_stopped(self):
        from botocore.exceptions import ClientError

        tagged, refusals = [], {"i-late": 1, "i-gone": 99}

        class EC2:
            def create_tags(self, Resources, Tags):
                if refusals.get(Resources[0], 0) > 0:
                    refusals[Resources[0]] -= 1
                    raise ClientError({"Error": {"Code": "InvalidInstanceID.NotFound", "Message": "gone"}}, "CreateTags")
                tagged.append((Resources, Tags))

        cases = [
            ("i-1", False, ["guest_reported"]),
            ("i-late", False, ["guest_report_failed", "guest_reported"]),  # EC2 eventually consistent
            ("i-gone", True, ["guest_report_failed"]),  # the worker stopping: no second try
        ]
        fake = mock.patch.object(guest.cloud, "client", lambda config, name, session: EC2())
        for instance, stopping, events in cases:
            with self.subTest(instance=instance), fake, mock.patch.object(guest, "REPORT_PAUSES", (0.01, 0.01)):
                stop = threading.Event()
                if stopping:
                    stop.set()
                reporter = guest.Reporter(dataclasses.replace(settings.load_config({}), instance_id=instance), stop)
                with self.assertLogs("guest", "INFO") as logged:
                    reporter._tag(guest.READY, 5.0)
                self.assertEqual([line.split("event=")[1].split()[0] for line in logged.output], events)
        value = [{"Key": guest.GUEST_TAG, "Value": "ready 5.000"}]
        self.assertEqual(tagged, [(["i-1"], value), (["i-late"], value)])
        with fake:  # a report older than one made since (a resume after a resume) is not sent
            reporter = guest.Reporter(dataclasses.replace(settings.load_config({}), instance_id="i-1"), threading.Event())
            reporter.latest = 9.0
            reporter._tag(guest.RESUMED, 5.0)
        self.assertEqual(len(tagged), 2)

    def test_a_worker_restarted_after_a_resume_says_resumed_at_the_agents_time(self):
        tagged = []
        with tempfile.TemporaryDirectory() as d, mock.patch.object(guest, "RESUMED_AT", Path(d, "resumed_at")):
            Path(d, "resumed_at").write_text("1700000000\n")
            reporter = guest.Reporter(dataclasses.replace(settings.load_config({}), instance_id="i-1"), threading.Event())
            with mock.patch.object(reporter, "_tag", lambda event, at: tagged.append((event, at))):
                reporter._report_boot()
        self.assertEqual(tagged, [(guest.RESUMED, 1_700_000_000.0)])

    def test_a_worker_whose_agent_failed_says_its_guest_is_unable_at_once(self):
        tagged = []
        reporter = guest.Reporter(dataclasses.replace(settings.load_config({}), instance_id="i-1"), threading.Event())
        failed = {"LoadState": "loaded", "ActiveState": "failed", "Result": "exit-code"}
        with mock.patch.object(guest, "agent_state", lambda: failed), mock.patch.object(guest, "resumed_at", lambda: None):
            with mock.patch.object(reporter, "_tag", lambda event, at: tagged.append(event)), self.assertLogs("guest"):
                reporter._report_boot()
        self.assertEqual(tagged, [guest.UNABLE])

    def test_the_agent_is_finished_only_once_its_unit_has_run_and_exited_with_success(self):
        done = {"LoadState": "loaded", "ActiveState": "inactive", "Result": "success", "ExecMainExitTimestampMonotonic": "9"}
        self.assertTrue(guest.agent_finished(done))
        for change, why in [
            ({"ActiveState": "active"}, "still at work"),
            ({"ExecMainExitTimestampMonotonic": "0"}, "not run yet this boot"),
            ({"Result": "exit-code", "ActiveState": "failed"}, "failed"),
            ({"LoadState": "not-found"}, "no agent"),
        ]:
            with self.subTest(why):
                self.assertFalse(guest.agent_finished({**done, **change}))
        self.assertFalse(guest.agent_finished({}), "no systemctl")
        failed = [{"LoadState": "not-found"}, {**done, "ActiveState": "failed", "Result": "exit-code"}]
        self.assertEqual([guest.agent_failed(s) for s in [done, {}, {**done, "ActiveState": "active"}] + failed], [0, 0, 0, 1, 1])


class WarmingTest(unittest.TestCase):
    def setUp(self):
        self.config = settings.load_config({})
        self.clock = [0.0]
        self.warming = warming.Warming(self.config, monotonic=lambda: self.clock[0])

    def test_only_stopped_cold_members_launched_for_hibernation_are_warmed_within_the_room(self):
        # (state, launched for hibernation) of members 1..; members 2 and 6 are warm (hibernated).
        states = [("stopped", True), ("stopped", True), ("running", True), ("stopping", True), ("stopped", False)]
        members = [dict(member(n, state), hibernates=h) for n, (state, h) in enumerate(states + [("stopped", True)], 1)]
        warm = {"i-2"}
        self.assertEqual(self.warming.cold(members, warm, 5), ["i-1", "i-6"], "stopped, cold, hibernation-capable")
        self.assertEqual(self.warming.cold(members, warm, 1), ["i-1"], "no more than the room")
        self.assertEqual(self.warming.cold(members, warm, 0), [])
        self.warming.given_up.add("i-1")
        self.assertEqual(self.warming.cold(members, warm, 5), ["i-6"], "one given up on is not tried again")
        plain = warming.Warming(settings.load_config({"FR_HIBERNATE": "0"}))
        self.assertEqual(plain.cold(members, warm, 5), [], "without FR_HIBERNATE nothing is warm")
        off = warming.Warming(settings.load_config({"FR_WARM_UP": "0"}))
        self.assertEqual(off.cold(members, warm, 5), [], "FR_WARM_UP=0")
        off.begin(["i-1"])
        self.assertEqual(off.active(members), set())

    def test_a_warming_member_hibernates_once_its_guest_is_up_and_is_given_up_on_past_its_patience(self):
        now = 1_000_000.0
        self.warming.begin(["i-1", "i-2", "i-3", "i-4"])
        members = [
            dict(member(1, "running"), hibernates=True),
            dict(member(2, "running"), hibernates=True),
            dict(member(3, "pending"), hibernates=True),
            dict(member(4, "stopping"), hibernates=True),
        ]
        up = dict(hibernates=True, launched=now - 3600, started=now - 30, guest=("ready", now - 5))
        booting = dict(up, guest=None)
        details = {"i-1": up, "i-2": booting, "i-3": booting, "i-5": dict(up, guest=("unable", now - 5))}
        members.append(dict(member(5, "running"), hibernates=True))
        self.warming.begin(["i-5"])
        self.assertEqual(self.warming.active(members), {"i-1", "i-2", "i-3", "i-5"}, "a stopping member is warming no more")
        self.assertEqual(self.warming.due(members, details, now), (["i-1"], ["i-5"]), "its agent failed: given up at once")
        self.assertEqual(set(self.warming.started), {"i-2", "i-3"}, "hibernated or stopped by others: forgotten")
        self.clock[0] = self.config.hibernate_after_launch + warming.PATIENCE + 1
        self.assertEqual(self.warming.due(members, details, now), ([], ["i-2"]), "pending: not stopped yet")
        self.assertEqual(self.warming.given_up, {"i-2", "i-5"})
        self.warming.release()
        self.assertEqual(self.warming.active(members), set(), "work came: no member is warming")


class FakeEC2:
    """Just enough of EC2 for Pool.resize: members described by id, started and stopped."""

    def __init__(self, instances):
        self.instances = {i["InstanceId"]: i for i in instances}
        self.calls = []

    def get_paginator(self, name):
        ec2 = self

        class Pages:
            def paginate(self, InstanceIds=None, Filters=()):
                found = [i for i in ec2.instances.values() if InstanceIds is None or i["InstanceId"] in InstanceIds]
                return [{"Reservations": [{"Instances": found}]}]

        return Pages()

    def start_instances(self, InstanceIds):
        self.calls.append(("start", InstanceIds))

    def stop_instances(self, InstanceIds, Hibernate=False):
        self.calls.append(("hibernate" if Hibernate else "stop", InstanceIds))


def described(number, state, guest_mark=None):
    """A member launched an hour ago, started 30 s ago, as DescribeInstances gives it."""
    now = time.time()
    tags = [{"Key": "Name", "Value": f"app-tier-instance-{number}"}]
    if guest_mark:
        tags.append({"Key": guest.GUEST_TAG, "Value": guest.mark(guest_mark, now - 5)})
    return {
        "InstanceId": f"i-{number}",
        "State": {"Name": state},
        "Tags": tags,
        "HibernationOptions": {"Configured": True},
        "LaunchTime": datetime.fromtimestamp(now - 30, UTC),
        "NetworkInterfaces": [{"Attachment": {"DeviceIndex": 0, "AttachTime": datetime.fromtimestamp(now - 3600, UTC)}}],
    }


class ResizeTest(unittest.TestCase):
    def test_a_cold_member_started_beside_one_still_warming_is_warmed_and_hibernated_not_forgotten(self):
        # Member 1 warms (booting: no guest mark yet); member 2 is stopped cold, member 3 warm.
        ec2 = FakeEC2([described(1, "running"), described(2, "stopped"), described(3, "stopped")])
        resizer = Pool(ec2, settings.load_config({"FR_MAX_INSTANCES": "3", "FR_SPARE_INSTANCES": "0"}))
        resizer.warm = {"i-3"}
        resizer.warming.begin(["i-1"])
        members = [dict(member(n, s), hibernates=True) for n, s in [(1, "running"), (2, "stopped"), (3, "stopped")]]
        self.assertEqual(resizer.resize(members, 0, idle=True), (["i-2"], []))
        self.assertEqual(set(resizer.warming.started), {"i-1", "i-2"}, "both warming")
        # The next step sees member 2 booting and member 1 up: member 1 hibernates, member 2 warms on.
        ec2.instances["i-1"] = described(1, "running", guest.READY)
        ec2.instances["i-2"] = described(2, "running")
        members[1]["state"] = "running"
        self.assertEqual(resizer.resize(members, 0, idle=True), ([], ["i-1"]))
        self.assertEqual(ec2.calls, [("start", ["i-2"]), ("hibernate", ["i-1"])])
        self.assertEqual(set(resizer.warming.started), {"i-2"})


if __name__ == "__main__":
    unittest.main()
