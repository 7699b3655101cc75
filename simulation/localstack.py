"""The whole service on one machine, with no AWS account: `./setup.sh local` runs this.

Starts a moto server on 127.0.0.1 (FR_MOTO_PORT) standing in for S3, SQS, EC2 (and DynamoDB, with
FR_RESULTS_TABLE=1), provisions the buckets, queues (the results table) and the stopped app-tier
pool in it, then runs the web tier and the autoscaler as
they run on AWS, only with FR_ENDPOINT_URL pointing at moto. In place of EC2 booting instances, the
launcher here runs one worker process (worker.py's loop, forked by simulation/forkserver.py with the
model already loaded) per pool instance that moto shows running, and SIGTERMs it when the instance
stops. With FR_SIMULATE=aws a worker starts only after the boot delay a real instance takes
(simulation/awslike/); each worker reaches moto through a network link of its own (simulation/netlink.py).
An instance that hibernates has its worker asked to pause (worker.py's pre-hibernation hook, as
systemd runs it on AWS), then frozen (SIGSTOP) and its link cut; the resume delay after the
instance runs again, it is thawed (SIGCONT) and told to go on (the post-hibernation hook), model
loaded and all. When a web host is provisioned into moto (provision --with-web), the web tier and
autoscaler here are taken for the ones on that host: both are stopped when the host shuts down (and
started again for a web host provisioned after it), and when provisioning sends the host its update
(a Run Command), both are restarted with the settings it put in the deploy bucket and the update's
outcome reported, as the host's SSM agent running the update script would. A worker whose instance
is terminated is killed, hibernated or not.
Each process calls AWS as its principal on AWS (the web role, the app role; this one is the
operator), which the AWS-like stack checks (simulation/awsiam.py). Logs go to FR_STATE_DIR/logs/
(var/state/logs/). Ctrl-C (SIGINT) or SIGTERM stops everything, in the reverse order of starting:
workers after the web tier (requests in progress are answered), moto last.
"""

import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time

import common
import worker
from core import cloud, heartbeat, settings, statefiles
from deploy.provision import provision
from scaling import pool
from simulation import awsiam, awslike
from simulation.forkserver import READY, parse_event, start_command, worker_config
from simulation.hostservices import (
    HostServices,
    WebHost,
    follow_web_host,
    provision_config,
    restart_failed,
    scaled_env,
    start_host_services,
)
from simulation.netlink import Link
from simulation.procs import Child

log = common.EventLog("localstack")

PYTHON = sys.executable
# Tools run as modules from the project directory (their processes are started with it as cwd).
# A moto server: forked from the test runner's fork server when there is one (simulation/motofork.py).
MOTO_SERVER = [PYTHON, "-m", "simulation.motofork"]
FORK_SERVER = [PYTHON, "-m", "simulation.forkserver"]
LOCAL_STACK = [PYTHON, "-m", "simulation.localstack"]
# moto accepts any image id; this names what would be the app-tier AMI on AWS.
LOCAL_AMI = "ami-0local0app0tier0"
LAUNCH_INTERVAL = 0.2
# How often the launcher asks whether an instance whose worker it stopped or froze is terminated
# (Launcher.reap_terminated): up to 30 of them, hibernated, in every step cost moto a full
# DescribeInstanceStatus of them five times a second; a frozen worker does nothing meanwhile.
REAP_INTERVAL = 1.0
START_TIMEOUT = 60


class Launcher:
    """Local stand-in for instances booting: a worker per running pool instance, forked by the
    fork server (simulation/forkserver.py) from a process that has the model loaded already; with
    `links` ((host, port) of moto), each through a Link of its own, so that hibernation can cut it."""

    def __init__(self, config, ec2, forkserver, resume_delay=0.0, links=None):
        self.config, self.ec2, self.forkserver = config, ec2, forkserver
        self.resume_delay = resume_delay
        self.boots = {}  # instance id -> (boot, agent) seconds of its last boot, as the journal says
        self.agent_due = {}  # instance id -> when its guest's agent has done its boot work
        self.upstream = links
        self.links = {}  # instance id -> Link
        self.pausing = {}  # instances hibernating -> when to freeze their workers, paused or not
        self.frozen = set()  # instances hibernated: their workers stopped with SIGSTOP
        self.running_since = {}  # instance id -> when the launcher first saw it running
        self.reaped = -REAP_INTERVAL  # when it last asked which of its stopped workers' instances are gone
        self.seen = 0
        self.workers = {}  # instance id -> worker pid (None until forked)
        self.stopping = set()
        self.broken = set()
        self.killed = set()  # instances whose workers were killed (terminated)
        self.names = {}  # instance id -> pool instance name, or None for an instance not in the pool

    def read_events(self):
        self.seen, lines = self.forkserver.since(self.seen)
        for event in filter(None, map(parse_event, lines)):
            if event.kind == "forked":
                self.workers[event.instance] = event.pid
                log.info("worker_started", instance=event.instance, pid=event.pid)
            else:
                self.workers.pop(event.instance, None)
                self.stopping.discard(event.instance)
                self.frozen.discard(event.instance)
                self.pausing.pop(event.instance, None)
                log.info("worker_exited", instance=event.instance, pid=event.pid, code=event.code)
                if event.code == settings.EX_CONFIG:
                    self.broken.add(event.instance)
                elif event.code == heartbeat.POWER_OFF_EXIT:  # as systemd/face-worker.service does
                    power_off(self.config, event.instance)

    def running(self):
        """{instance id: name} of the pool's running instances.

        Asked five times a second, so asked cheaply (pool.instance_states): describing the pool
        in full each time cost moto CPU taken from the model. Names come from
        describing the pool, again only when an instance not seen before runs (pool repair)."""
        ids = set(pool.instance_states(self.ec2))
        if ids - self.names.keys():
            self.names.update({i["id"]: i["name"] for i in pool.describe(self.ec2, self.config)})
            self.names.update({instance_id: None for instance_id in ids - self.names.keys()})
        return {instance_id: self.names[instance_id] for instance_id in ids if self.names[instance_id]}

    def step(self):
        self.read_events()
        if time.monotonic() - self.reaped >= REAP_INTERVAL:
            self.reaped = time.monotonic()
            self.reap_terminated()
        running = self.running()
        now = time.monotonic()
        if running.keys() - self.running_since.keys() and self.resume_delay:  # AWS-like: boots take time
            self.boots = awslike.guest_boots(awslike.read_journal(self.config.state_dir))
        self.running_since = {i: self.running_since.get(i, now) for i in running}
        leaving = {
            i: pid
            for i, pid in self.workers.items()
            if pid
            and i not in running
            and i not in self.stopping
            and i not in self.frozen
            and i not in self.pausing
            and i not in self.killed
        }
        sleeping = hibernated(self.ec2, leaving)
        for instance_id, pid in leaving.items():
            if instance_id in sleeping:
                # The OS runs its sleep hooks first: the worker finishes its poll and batch in hand.
                os.kill(pid, worker.PAUSE_SIGNAL)
                self.pausing[instance_id] = now + self.config.poll_wait + worker.PAUSE_PATIENCE
                log.info("worker_pausing", instance=instance_id, pid=pid)
            else:
                os.kill(pid, signal.SIGTERM)
                self.stopping.add(instance_id)
                log.info("worker_stopping", instance=instance_id, pid=pid)
        for instance_id, due in list(self.pausing.items()):
            if now >= due or worker.paused(worker_config(self.config, self.names[instance_id])):
                # As hibernation does: the process stops where it is; its connections do not survive.
                os.kill(self.workers[instance_id], signal.SIGSTOP)
                self.links[instance_id].cut()
                del self.pausing[instance_id]
                self.frozen.add(instance_id)
                log.info("worker_frozen", instance=instance_id, pid=self.workers[instance_id])
        for instance_id, name in running.items():
            up_for = now - self.running_since[instance_id]
            if instance_id in self.frozen:
                if up_for >= self.resume_delay:
                    os.kill(self.workers[instance_id], signal.SIGCONT)
                    os.kill(self.workers[instance_id], worker.RESUME_SIGNAL)
                    self.frozen.discard(instance_id)
                    log.info("worker_resumed", instance=instance_id, pid=self.workers[instance_id])
                continue
            boot, agent = self.boots.get(instance_id, (0.0, 0.0))
            if up_for >= boot and instance_id not in self.workers and instance_id not in self.broken:
                # A boot: /var/run is empty again, until the agent has done this boot's work.
                worker_config(self.config, name).agent_done_file.unlink(missing_ok=True)
                self.agent_due[instance_id] = self.running_since[instance_id] + boot + agent
                self.forkserver.send(start_command(instance_id, name, self.link(instance_id)))
                self.workers[instance_id] = None
        self.finish_agents(running, now)

    def finish_agents(self, running, now):
        """As each booting guest's hibernation agent does, once its boot work is done: say so, in
        the file the worker looks for (core/guest.py)."""
        for instance_id, due in list(self.agent_due.items()):
            if instance_id not in running:
                del self.agent_due[instance_id]
            elif now >= due:
                agent_done = worker_config(self.config, running[instance_id]).agent_done_file
                agent_done.parent.mkdir(parents=True, exist_ok=True)
                agent_done.touch()
                del self.agent_due[instance_id]

    def reap_terminated(self):
        """A worker told to stop whose instance is terminated meanwhile is killed: nothing of a
        terminated instance runs on (its role's credentials are gone with it after a teardown)."""
        from botocore.exceptions import ClientError

        told = [i for i in (*self.stopping, *self.pausing, *self.frozen) if self.workers.get(i)]
        if not told:
            return
        try:
            states = pool.instance_states(self.ec2, told)
        except ClientError:  # an instance moto no longer knows of: asked again next step
            return
        for instance_id, state in states.items():
            if state == "terminated" and instance_id not in self.killed:
                # A hibernated worker too (stopped with SIGSTOP): SIGKILL ends a stopped process.
                self.killed.add(instance_id)
                os.kill(self.workers[instance_id], signal.SIGKILL)
                self.pausing.pop(instance_id, None)
                self.frozen.discard(instance_id)
                log.info("worker_killed", instance=instance_id, pid=self.workers[instance_id], detail="instance terminated")

    def link(self, instance_id):
        """The endpoint of the instance's own network link (None without links: FR_ENDPOINT_URL)."""
        if self.upstream is None:
            return None
        if instance_id not in self.links:
            self.links[instance_id] = Link(self.upstream)
        return self.links[instance_id].url


def power_off(config, instance_id):
    """As the guest's OS powering off does (awsiam.guest_shutdown); an instance moto no longer
    knows (terminated meanwhile, moto restarted) is said and passed over."""
    from botocore.exceptions import BotoCoreError, ClientError

    log.info("guest_power_off", instance=instance_id, detail="the dead man's switch: idle, no autoscaler")
    try:
        awsiam.guest_shutdown(config.endpoint_url, config.region, instance_id)
    except (BotoCoreError, ClientError) as e:
        log.warning("guest_power_off_failed", instance=instance_id, error=e)


def hibernated(ec2, ids):
    """Those of the instances `ids` that were hibernated, not stopped (EC2's StateReason). An
    instance EC2 no longer knows (moto restarted: every instance is new) is gone, not hibernated."""
    from botocore.exceptions import ClientError

    if not ids:
        return set()
    try:
        pages = list(ec2.get_paginator("describe_instances").paginate(InstanceIds=list(ids)))
    except ClientError as e:
        if cloud.error_code(e) != "InvalidInstanceID.NotFound":
            raise
        if len(ids) == 1:
            return set()
        return set().union(*(hibernated(ec2, [i]) for i in ids))  # which of them: one at a time
    return {
        i["InstanceId"]
        for page in pages
        for r in page["Reservations"]
        for i in r["Instances"]
        if i.get("StateReason", {}).get("Code") == pool.HIBERNATE_REASON
    }


@contextlib.contextmanager
def guests_meanwhile(launcher, forkserver):
    """The launcher's steps in a thread of their own while the block runs, from when the fork
    server is ready: the guests of the instances provisioning launches, which its warm-up waits
    for. A step that fails ends them, and is raised when the block ends."""
    done, failed = threading.Event(), []

    def steps():
        try:
            forkserver.wait_for(READY, START_TIMEOUT)
            while not done.is_set():
                launcher.step()
                done.wait(LAUNCH_INTERVAL)
        except Exception as e:
            log.error("guests_failed", error=e, detail="no guest runs: provisioning's warm-up waits in vain")
            failed.append(e)

    thread = threading.Thread(target=steps, name="guests", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    if failed:
        raise failed[0]


def run(config, stop):
    logs = statefiles.log_dir(config.state_dir)
    logs.mkdir(parents=True, exist_ok=True)
    # Dummy credentials: local mode never sends real ones anywhere, not even to moto.
    os.environ.update(AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local", AWS_SESSION_TOKEN="local")
    services = []
    try:
        moto = Child(
            "moto",
            [*MOTO_SERVER, "-H", "127.0.0.1", "-p", str(config.moto_port)],
            log_path=logs / "moto.log",
            cwd=settings.PROJECT_DIR,
        )
        services.append(moto)
        moto_port = moto.wait_for(r"Running on http://127\.0\.0\.1:(\d+)", START_TIMEOUT)[1]
        endpoint = f"http://127.0.0.1:{moto_port}"
        config = dataclasses.replace(config, endpoint_url=endpoint, ami_id=config.ami_id or LOCAL_AMI)
        env = dict(os.environ, FR_ENDPOINT_URL=endpoint, FR_AMI_ID=config.ami_id)
        # Each process calls AWS as the principal it is on AWS (the AWS-like stack checks it):
        # the web host's processes as the web role, workers as the app role; this one is the operator.
        web_env, app_env = ({**env, **awsiam.credentials(config.role(tier))} for tier in ("web", "app"))
        ec2 = cloud.client(config, "ec2")
        # Started before the web tier, so that it stops after it (the reverse order, below), and
        # before provisioning, which its loading of the model overlaps (it calls no AWS API). Its
        # workers share the cores with each other and with moto: OpenMP threads that wait for work
        # sleep instead of spinning (read by libgomp as torch loads; see simulation/forkserver.py).
        forkserver = Child(
            "forkserver",
            FORK_SERVER,
            {**scaled_env(config, app_env), "OMP_WAIT_POLICY": "PASSIVE"},
            log_path=logs / "forkserver.log",
            cwd=settings.PROJECT_DIR,
            commands=True,
        )
        services.append(forkserver)
        if config.simulate == "aws":
            timings = awslike.timings(config.simulate_time_scale)
            launcher = Launcher(config, ec2, forkserver, timings["resume"], links=("127.0.0.1", int(moto_port)))
        else:
            launcher = Launcher(config, ec2, forkserver)
        with guests_meanwhile(launcher, forkserver):  # provisioning's warm-up waits for guests
            provision(provision_config(config, os.environ), lambda service: cloud.client(config, service))
        if not config.admin_token:
            # As on a web host: the web tier reads the admin key provisioning made (deploy/adminkey.py).
            web_env = {**web_env, "FR_ADMIN_TOKEN_PARAMETER": config.admin_key_parameter}
        services_env = scaled_env(config, web_env)
        web, port, scaler = start_host_services(config, services_env, logs, services)
        host = HostServices(web, port, scaler, services_env)
        forkserver.wait_for(READY, START_TIMEOUT)
        web_host = WebHost(config, ec2, cloud.client(config, "ssm"), cloud.client(config, "s3"))
        # From now on this stack runs (and reports) the Run Commands sent to any web host.
        awslike.serve_as_agent(config.state_dir, settings.WEB_HOST_NAME)
        retired = set()  # services stopped on purpose, or failed and restarted
        restarts = {}  # {failed Child: when it is restarted}: the host's services that failed
        url = f"http://{config.host}:{port}/"
        log.info("ready", url=url, endpoint=endpoint, logs=logs)
        log.info("try", command=f"curl -F inputFile=@../shared/fixtures/face_images_100/test_00.jpg {url}")
        credentials = "AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local"
        log.info("admin_key", command=f"FR_ENDPOINT_URL={endpoint} {credentials} ./setup.sh admin-key")
        while not stop.is_set():
            host = restart_failed(host, logs, services, retired, restarts)
            dead = [s.name for s in services if s.popen.poll() is not None and s not in retired]
            if dead:
                log.error("service_died", name=",".join(dead), detail=f"see {logs}")
                return 1
            launcher.step()
            host = follow_web_host(config, web_host, host, logs, services, retired)
            stop.wait(LAUNCH_INTERVAL)
        return 0
    finally:
        # The reverse of the start order: autoscaler, web tier (its requests in progress are answered
        # by the workers), fork server (its workers finish their images), moto.
        log.info("stopping")
        for service in reversed(services):
            service.stop()
        log.info("stopped")


def main():
    config = settings.load_config_or_exit()
    common.setup_logging(config.log_level)
    settings.require_file(config.weights, "run ./setup.sh local, which makes stand-in weights")
    settings.require_file(config.gallery, "run ./setup.sh local, which enrols a stand-in gallery")
    stop = threading.Event()
    common.stop_on_signals(stop)
    sys.exit(run(config, stop))


if __name__ == "__main__":
    main()
