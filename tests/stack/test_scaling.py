"""End to end on the whole local stack (`simulation/localstack.py`, what `./setup.sh local` runs):
moto, web tier, autoscaler and the launcher's worker processes, all on 127.0.0.1."""

import collections
import dataclasses
import json
import os
import re
import signal
import time
import unittest
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from autoscaler import Autoscaler
from core import cloud, settings, statefiles
from core.cloud import queue_depth
from deploy import alarms
from deploy.provision import provision
from scaling import launching, pool
from simulation import awslike
from simulation.procs import alive, descendants
from tests.support import (
    DESCRIBE_EVERY,
    IMAGES,
    NO_GUESTS,
    TIME_SCALE,
    Sampler,
    aws,
    burst,
    denials,
    expected_answers,
    refusals,
    running_instances,
    start_local_stack,
    start_moto,
    state_dir,
    upload,
    wait_until,
)

MAX_INSTANCES = 15
POOL_SIZE = 30  # with as many spare members (FR_SPARE_INSTANCES's default)
SMALL_POOL = 4
SCALE_IN_LIMIT = 2.0
# A burst that runs all 15 members a while (4 uploads each), not the course's 100: the suite's time
# is CPU, and the model's share of it is per image. FirstRunTest and PipelineTest send 100.
BURST = MAX_INSTANCES * 4
# WarmFloorTest's FR_IDLE_STOP (the dead man's switch, core/heartbeat.py), in the stack's seconds.
IDLE_STOP = 4.0
# The AWS-like stack's delays, and the autoscaler's hibernation waits, at the tests' scale; `busy`:
# long enough for a booted guest to be up (pending, boot, the volume's first read, the agent's work).
SECONDS = dict(awslike.timings(TIME_SCALE), hibernate_after_launch=120 * TIME_SCALE, busy=60 * TIME_SCALE)


class ScalingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.state = state_dir("scaling")
        cls.stack, cls.url, endpoint = start_local_stack(cls, "scaling", cls.state, FR_MAX_INSTANCES=MAX_INSTANCES, FR_WARM_UP=1)
        cls.ec2, cls.sqs = aws(endpoint, "ec2"), aws(endpoint, "sqs")
        cls.config = settings.load_config({"FR_PREFIX": "scaling"})
        cls.provisioned, cls.journal_at_start = pool.describe(cls.ec2, cls.config), awslike.read_journal(cls.state)

    def decisions(self):
        """The autoscaler's decisions so far, oldest first: {field: text} of its `event=decision` lines."""
        lines = (statefiles.log_dir(self.state) / "autoscaler.log").read_text().splitlines()
        return [
            dict(re.findall(r"(\w+)=(\S+)", line.split("event=decision", 1)[1])) for line in lines if "event=decision" in line
        ]

    def test_provisioning_warms_every_member_up_booting_each_once(self):
        # Before the stack said it was ready: each member booted once (its volume's first read paid
        # then), its guest said it was up, and it hibernated, within the vCPU quota's waves.
        self.assertEqual(len(self.provisioned), POOL_SIZE)
        self.assertEqual([m["name"] for m in self.provisioned if not m["hibernated"]], [], "members not hibernated")
        boots = collections.Counter(e["instances"][0] for e in self.journal_at_start if e["action"] == "GuestBoot")
        self.assertEqual((len(boots), set(boots.values())), (POOL_SIZE, {1}))
        self.assertEqual([e for e in self.journal_at_start if e["action"] == "HibernationDropped"], [])
        self.assertLessEqual(most_not_stopped(self.journal_at_start), MAX_INSTANCES, "past the vCPU quota's room")

    def test_a_member_that_ran_long_enough_hibernates_and_resumes_its_worker_with_the_model_loaded(self):
        # The next test starts from 0 running, whatever happens here.
        self.addCleanup(wait_until, lambda: running_instances(self.ec2) == 0, 30, what="0 running instances")
        first = instance_id(self.ec2, self.config, 1)
        # The guest hibernates only once its agent is set up after launch and its guest is up, and
        # not in the moments after a resume (pool.hibernation_unready, at this stack's scaled
        # timings): the warm-up waits for that, so every member is hibernated once it is done.
        wait_until(self.all_hibernated, 60, interval=0.5, what="every member hibernated (the warm-up)")
        forked = workers_forked(self.stack, self.state, "app-tier-instance-1")
        (pid,) = re.findall(rf"event=worker_started instance={first} pid=(\d+)", self.stack.tail(2000))[-1:]
        # Resumed, instance 1 (lowest number) answers for longer than FR_HIBERNATE_AFTER_RESUME: the
        # scale-in hibernates it again, and the upload once all are stopped resumes it.
        answers = uploads_for(self.url, SECONDS["busy"] + 2)
        answers.append(upload_once_all_stopped(self.ec2, self.config, self.url))
        self.assertEqual(set(answers), {(200, "test_00:Paul\n")})
        self.assertEqual(workers_forked(self.stack, self.state, "app-tier-instance-1"), forked, "a worker booted")
        self.assertGreaterEqual(self.stack.tail(2000).count(f"event=worker_resumed instance={first} pid={pid}"), 2)
        stops = [e for e in awslike.read_journal(self.state) if e["action"] == "StopInstances" and first in e["instances"]]
        self.assertIn(True, [e.get("hibernate") for e in stops], "the autoscaler's stop hibernated it")

    def test_a_terminated_pool_instance_is_replaced_by_a_stopped_one(self):
        victim = instance_id(self.ec2, self.config, 7)
        self.ec2.terminate_instances(InstanceIds=[victim])

        def replacement():
            members = pool.describe(self.ec2, self.config)
            found = [i for i in members if i["name"] == "app-tier-instance-7" and i["state"] == "stopped"]
            return len(members) == POOL_SIZE and found

        # EC2 cannot create an instance stopped: the repair runs it, then stops it.
        (replaced,) = wait_until(
            replacement, 30, interval=DESCRIBE_EVERY, what=f"a stopped app-tier-instance-7 in a pool of {POOL_SIZE}"
        )
        self.assertNotEqual(replaced["id"], victim)
        # Launched by the autoscaler as the web role, with IAM enforced.
        self.assertEqual(denials(self.state), [])

    def test_bursts_back_to_back_scale_to_15_never_more_and_back_to_0_within_2_s_with_no_stop_stuck(self):
        # On the AWS-like stack: instances take time to start and stop, EC2 refuses calls in the
        # wrong states, SQS's counts trail the truth by longer than the 2 s allowed for scale-in, and
        # the guest drops a hibernation asked too soon. Each burst comes as soon as the previous one's
        # pool is back to 0, its members still stopping: spare members take it.
        expected = expected_answers()
        stems = sorted(expected)[:BURST]
        started = []
        for number in range(2):
            with self.subTest(burst=number):
                self.assertEqual(running_instances(self.ec2), 0, "instances running before the burst")
                stopping = {i["id"] for i in pool.describe(self.ec2, self.config) if i["state"] == "stopping"}
                decisions = len(self.decisions())
                sampler = Sampler(self.ec2)
                answers = burst(self.url, stems)
                last_answer = time.monotonic()
                wait_until(
                    lambda: running_instances(self.ec2) == 0,
                    SCALE_IN_LIMIT,
                    interval=0.1,
                    what="0 running instances after the last answer",
                )
                scaled_in = time.monotonic() - last_answer
                counts = sampler.finish()
                self.assertEqual(answers, [(200, f"{s}:{expected[s]}\n") for s in stems])
                self.assertEqual(max(counts), MAX_INSTANCES, f"samples: {counts}")
                self.assertLessEqual(scaled_in, SCALE_IN_LIMIT)
                # The autoscaler's first step that saw the burst.
                started.append((stopping, next(d for d in self.decisions()[decisions:] if d["waiting"] != "0")))
        # SQS's counts show the drained queue for their lag yet: no instance is started for them.
        after = len(awslike.read_journal(self.state))
        quiet_until = time.monotonic() + SECONDS["sqs_count_lag"] * 2 + 1
        wait_until(lambda: time.monotonic() > quiet_until, 15, what="twice SQS's count lag")
        journal = awslike.read_journal(self.state)
        warmed = set(re.findall(r"event=warming instance=(\S+)", (statefiles.log_dir(self.state) / "autoscaler.log").read_text()))
        for_work = [e for e in journal[after:] if e["action"] == "StartInstances" and not set(e["instances"]) <= warmed]
        self.assertEqual(for_work, [], "started for old counts (not to warm members up)")
        self.assertEqual(refusals(self.state), [])
        self.assertEqual(denials(self.state), [], "IAM denied a call of the web or app role")
        self.assertEqual([e for e in journal if e["action"] == "HibernationDropped"], [])
        self.assertLessEqual(
            max(e["after"] for e in journal if e["action"] == "Stopped"),
            SECONDS["stopping"],
            "a member stayed stopping past a stop's time",
        )
        for stopping, first in started[1:]:
            self.assertTrue(stopping, "the burst came while members were stopping")
            # Its first step started as many as it wanted: spares, and members no longer stopping (a
            # stopping one EC2 refuses: refusals, above, are none). Without spares it would wait.
            self.assertEqual(int(first["started"]), int(first["desired"]) - int(first["running"]), first)
        for url in cloud.queue_urls(self.sqs, self.config):
            wait_until(lambda: sum(queue_depth(self.sqs, url)) == 0, 10, what=f"{url} empty")

    def all_hibernated(self):
        return all(i["hibernated"] for i in pool.describe(self.ec2, self.config))

    def test_cold_members_are_warmed_while_idle_and_a_restarted_autoscaler_resumes_and_hibernates_them(self):
        # Whatever came before (provisioning's plain stops, bursts whose members booted or resumed
        # moments before the scale-in), the idle pool boots each cold member once and hibernates it.
        wait_until(self.all_hibernated, 60, interval=0.5, what="every member hibernated")
        # What the pool knows of each member's guest is on the member (the fr-guest tag), not in the
        # autoscaler's memory: one killed between bursts and restarted does as the old one would.
        os.kill(autoscaler_pid(self.stack), signal.SIGKILL)
        self.stack.wait_for("event=service_restarted name=autoscaler", 30)
        before = len(awslike.read_journal(self.state))
        expected = expected_answers()
        stems = sorted(expected)
        answers = burst(self.url, stems)
        wait_until(lambda: running_instances(self.ec2) == 0, 30, interval=0.1, what="0 running after the burst")
        self.assertEqual(answers, [(200, f"{s}:{expected[s]}\n") for s in stems])
        journal = awslike.read_journal(self.state)
        started = {
            i for e in journal[before:] if e["action"] == "StartInstances" and not e.get("refused") for i in e["instances"]
        }
        self.assertEqual(len(started), MAX_INSTANCES)
        self.assertEqual([e for e in journal[before:] if e["action"] == "GuestBoot"], [], "a member booted: it was cold")
        # Resumed at the burst's start, each ran longer than FR_HIBERNATE_AFTER_RESUME: hibernated again.
        stops = [e for e in journal[before:] if e["action"] == "StopInstances" and not e.get("refused")]
        self.assertEqual({i for e in stops for i in e["instances"]}, started)
        self.assertEqual({e.get("hibernate") for e in stops}, {True}, "a member was stopped plainly")
        self.assertEqual([e for e in journal if e["action"] == "HibernationDropped"], [], "a warm-up hibernated too soon")


def autoscaler_pid(stack):
    (pid,) = [p for p in descendants(stack.pid) if b"autoscaler.py" in Path(f"/proc/{p}/cmdline").read_bytes()]
    return pid


def most_not_stopped(journal):
    """The most instances launched or started and not yet stopped at once, by the journal."""
    live, most = set(), 0
    for entry in journal:
        if entry["action"] in ("RunInstances", "StartInstances") and not entry.get("refused"):
            live.update(entry["instances"])
        elif entry["action"] == "Stopped":
            live.difference_update(entry["instances"])
        most = max(most, len(live))
    return most


def uploads_for(url, seconds):
    """Uploads of test_00 one after another for `seconds`: their answers."""
    answers, until = [], time.monotonic() + seconds
    while time.monotonic() < until:
        answers.append(upload(url, "test_00.jpg", (IMAGES / "test_00.jpg").read_bytes()))
    return answers


def upload_once_all_stopped(ec2, config, url):
    """An upload of test_00 once every member is stopped: its answer."""
    wait_until(
        lambda: {i["state"] for i in pool.describe(ec2, config)} == {"stopped"}, 30, DESCRIBE_EVERY, "every instance stopped"
    )
    return upload(url, "test_00.jpg", (IMAGES / "test_00.jpg").read_bytes())


def workers_forked(stack, state, name):
    """The pids of the workers this stack (of FR_STATE_DIR `state`) forked for instance `name` (its
    log may hold older runs')."""
    ours = {match[1] for match in re.finditer(r"event=worker_started instance=\S+ pid=(\d+)", stack.tail(1000))}
    log = (statefiles.log_dir(state) / f"{name}.log").read_text()
    return set(re.findall(rf"event=worker_forked name={name} pid=(\d+)", log)) & ours


def instance_id(ec2, config, number):
    return next(i["id"] for i in pool.describe(ec2, config) if i["name"] == pool.instance_name(number))


def stack_state(prefix):
    """LocalStackTest's FR_STATE_DIR for the stack of `prefix`."""
    return settings.PROJECT_DIR / f"var/state-{prefix}"


class PoolObservationTest(unittest.TestCase):
    """The autoscaler (and the status chart) ask moto only for states, through pool.Watch, and describe
    the pool again when it may have changed."""

    @classmethod
    def setUpClass(cls):
        endpoint = start_moto(cls)
        cls.config = settings.load_config(
            {"FR_PREFIX": "observe", "FR_ENDPOINT_URL": endpoint, "FR_AMI_ID": "ami-test", **NO_GUESTS}
        )
        provision(cls.config, lambda service: aws(endpoint, service))
        cls.ec2, cls.sqs = aws(endpoint, "ec2"), aws(endpoint, "sqs")

    def test_states_are_read_cheaply_until_a_member_is_terminated(self):
        described = []
        self.ec2.meta.events.register("before-call.ec2.DescribeInstances", lambda **_: described.append(1))
        scaler = Autoscaler(self.config, self.sqs, self.ec2)
        members = scaler.pool.watch.observe()
        self.assertEqual(len(members), POOL_SIZE)
        self.ec2.start_instances(InstanceIds=[members[2]["id"]])
        observed = scaler.pool.watch.observe()
        self.assertEqual(len(described), 1, "the pool was described again while nothing but a state changed")
        self.assertEqual(observed, pool.describe(self.ec2, self.config))
        self.assertIn(observed[2]["state"], pool.ACTIVE_STATES)

        self.ec2.terminate_instances(InstanceIds=[members[6]["id"]])
        observed = scaler.pool.watch.observe()
        self.assertEqual(len(described), 3, "a terminated member must make the autoscaler describe the pool")
        self.assertEqual([i["id"] for i in observed], [i["id"] for i in members if i["id"] != members[6]["id"]])

    def test_an_incomplete_pool_is_described_again_at_once(self):
        config = dataclasses.replace(self.config, prefix="observe-empty")
        provision(config, lambda service: aws(config.endpoint_url, service))
        gone = [i["id"] for i in pool.describe(self.ec2, config)]
        self.ec2.terminate_instances(InstanceIds=gone)
        scaler = Autoscaler(config, self.sqs, self.ec2)
        self.assertEqual(scaler.pool.watch.observe(), [])
        launching.repair(self.ec2, config, [])  # as a provisioning run would, while the autoscaler runs
        # One wave launched (the rest follow), seen once EC2 shows the new instances to describe calls.
        wait_until(lambda: len(scaler.pool.watch.observe()) == MAX_INSTANCES, 10, what="the new members observed")


class LocalStacks(unittest.TestCase):
    """Tests that each run a stack of their own (they stop or damage it); no tests of its own."""

    def start_stack(self, prefix, **fr):
        stack, url, endpoint = start_local_stack(self, prefix, stack_state(prefix), **fr)
        return stack, url, aws(endpoint, "ec2")


class LocalStackTest(LocalStacks):
    """A stack with plain stops, on a pool of SMALL_POOL (2 + 2 spares: no burst of 15 is needed),
    made sooner and costing moto less; Ctrl-C ends it."""

    def test_with_plain_stops_a_restarted_instance_boots_a_new_worker_keeping_the_old_log_and_ctrl_c_ends_all(self):
        stack, url, ec2 = self.start_stack("plain", FR_HIBERNATE=0, FR_MAX_INSTANCES=SMALL_POOL // 2)
        config = settings.load_config({"FR_PREFIX": "plain"})
        # An instance tagged ours under a name no member has (an operator's typo): left alone, said once.
        (stray,) = ec2.run_instances(
            ImageId="ami-12345678",
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance", "Tags": pool.tags(config, "app-tier-instance-16b")}],
        )["Instances"]
        stack.wait_for(
            f"event=stray_instance instance={stray['InstanceId']}", 30
        )  # the launcher describes the pool when a new instance runs
        status = json.loads(urllib.request.urlopen(url + "status?format=json", timeout=10).read())
        self.assertIsNone(status["error"])
        self.assertEqual([upload_once_all_stopped(ec2, config, url) for _ in range(2)], [(200, "test_00:Paul\n")] * 2)
        logs = statefiles.log_dir(stack_state("plain"))
        self.assertEqual((logs / "web.log").read_text().count(f"event=stray_instance instance={stray['InstanceId']}"), 1)
        self.assertNotIn("event=step_failed", (logs / "autoscaler.log").read_text())
        self.assertEqual(
            len(workers_forked(stack, stack_state("plain"), "app-tier-instance-1")),
            2,
            "two workers in one log: the first run's lines were kept",
        )
        # The same stack, stopped with Ctrl-C while a worker runs: no process of it is left.
        wait_until(
            lambda: {i["state"] for i in pool.describe(ec2, config)} == {"stopped"}, 30, DESCRIBE_EVERY, "every instance stopped"
        )
        started = stack.tail(1000).count("event=worker_started")
        with ThreadPoolExecutor(1) as clients:
            answer = clients.submit(upload, url, "test_00.jpg", (IMAGES / "test_00.jpg").read_bytes())
            wait_until(lambda: stack.tail(1000).count("event=worker_started") > started, 30, what="a worker started")
            family = descendants(stack.pid)
            self.assertEqual(answer.result(), (200, "test_00:Paul\n"))
        self.assertGreaterEqual(len(family), 5, "moto, fork server, web, autoscaler and a worker")
        stack.signal(signal.SIGINT)
        self.assertEqual(stack.popen.wait(30), 0)
        wait_until(lambda: not [pid for pid in family if alive(pid)], 10, what="every process gone")


class WarmFloorTest(LocalStacks):
    """A stack with a warm floor (FR_MIN_INSTANCES) and a short FR_IDLE_STOP: a class of its own, so
    that it runs beside LocalStackTest's stacks rather than after them."""

    def test_a_warm_floor_runs_while_its_autoscaler_is_heard_and_without_it_every_member_stops_itself(self):
        stack, url, ec2 = self.start_stack("floor", FR_MIN_INSTANCES=2, FR_IDLE_STOP=IDLE_STOP)
        state, config = stack_state("floor"), settings.load_config({"FR_PREFIX": "floor"})
        wait_until(lambda: running_instances(ec2) == 2, 30, interval=0.1, what="the floor of 2 running with no work")
        # Idle past FR_IDLE_STOP, its autoscaler heard from (core/heartbeat.py): the floor stays.
        quiet_until = time.monotonic() + IDLE_STOP * 1.5
        wait_until(lambda: time.monotonic() > quiet_until, IDLE_STOP * 2, what="FR_IDLE_STOP and a half")
        self.assertEqual(running_instances(ec2), 2)
        expected = expected_answers()
        stems = sorted(expected)[:BURST]
        sampler = Sampler(ec2)
        answers = burst(url, stems)
        last_answer = time.monotonic()
        wait_until(lambda: running_instances(ec2) == 2, SCALE_IN_LIMIT, interval=0.1, what="back to the floor of 2")
        scaled_in = time.monotonic() - last_answer
        counts = sampler.finish()
        self.assertEqual(answers, [(200, f"{s}:{expected[s]}\n") for s in stems])
        self.assertEqual((min(counts), max(counts)), (2, MAX_INSTANCES), f"samples: {counts}")
        self.assertLessEqual(scaled_in, SCALE_IN_LIMIT)
        # A burst whose autoscaler hangs once all 15 run (its host frozen: nothing restarts it, and
        # it is not heard from): the burst is answered, then every member powers itself off.
        stems = sorted(expected)[-BURST:]  # others than the first burst's
        with ThreadPoolExecutor(1) as client:
            answers = client.submit(burst, url, stems)
            wait_until(lambda: running_instances(ec2) == MAX_INSTANCES, 30, interval=0.1, what="15 running")
            scaler = autoscaler_pid(stack)
            os.kill(scaler, signal.SIGSTOP)
            self.assertEqual(answers.result(), [(200, f"{s}:{expected[s]}\n") for s in stems])
        last_answer = time.monotonic()
        # The bound: idle FR_IDLE_STOP, then a look after the next empty receive (a long poll, 1 s
        # here) or a tenth of it later, the launcher's step, a stop, and time to spare on a busy machine.
        bound = IDLE_STOP + max(1.0, IDLE_STOP / 10) + 0.2 + awslike.timings(TIME_SCALE)["stopping"] + 3
        wait_until(lambda: running_instances(ec2) == 0, bound * 2, interval=0.1, what="every member stopped by itself")
        self.assertLessEqual(time.monotonic() - last_answer, bound)
        shutdowns = [e for e in awslike.read_journal(state) if e["action"] == "GuestShutdown"]
        self.assertEqual(({e["behaviour"] for e in shutdowns}, len(shutdowns)), ({"stop"}, MAX_INSTANCES))
        wait_until(
            lambda: {m["state"] for m in pool.describe(ec2, config)} == {"stopped"},
            10,
            DESCRIBE_EVERY,
            "all stopped, members still",
        )
        # Killed (as kill -9 does), it is restarted as its unit would be, and carries on.
        os.kill(scaler, signal.SIGKILL)
        stack.wait_for("event=service_restarted name=autoscaler", 30)
        wait_until(lambda: running_instances(ec2) == 2, 30, interval=0.1, what="the floor of 2 again")
        self.assertEqual(upload(url, "test_00.jpg", (IMAGES / "test_00.jpg").read_bytes()), (200, "test_00:Paul\n"))
        # The autoscaler published the alarms' metrics (scaling/metrics.py), as the web role.
        cloudwatch = aws(ec2.meta.endpoint_url, "cloudwatch")
        published = cloudwatch.list_metrics(Namespace=alarms.NAMESPACE, Dimensions=[{"Name": "Prefix", "Value": "floor"}])
        self.assertEqual({m["MetricName"] for m in published["Metrics"]}, set(alarms.METRICS))
        self.assertEqual(denials(state), [])


if __name__ == "__main__":
    unittest.main()
