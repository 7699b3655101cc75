"""The whole service on one machine, with no AWS account: `./setup.sh local` runs this.

Starts a moto server on 127.0.0.1 (FR_MOTO_PORT) standing in for S3, SQS and EC2, provisions the
buckets, queues and the stopped app-tier pool in it, then runs the web tier and the autoscaler as
they run on AWS, only with FR_ENDPOINT_URL pointing at moto. In place of EC2 booting instances, the
launcher here runs one real `worker.py` process per pool instance that moto shows running and
SIGTERMs it when the instance stops. Logs go to var/logs/. Ctrl-C (SIGINT) or SIGTERM stops
everything, in order: autoscaler, web tier (requests in progress are answered), workers, moto.
"""
import dataclasses
import logging
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common  # noqa: E402
from tools.procs import Child  # noqa: E402
from tools.provision import provision  # noqa: E402

log = logging.getLogger("localstack")

LOG_DIR = common.PROJECT_DIR / "var/logs"
PYTHON = sys.executable
MOTO_SERVER = str(Path(sys.executable).with_name("moto_server"))
# moto accepts any image id; this names what would be the app-tier AMI on AWS.
LOCAL_AMI = "ami-0local0app0tier0"
LAUNCH_INTERVAL = 0.2
START_TIMEOUT = 60


class Launcher:
    """Local stand-in for instances booting: a worker process per running pool instance."""

    def __init__(self, config, ec2, env):
        self.config = config
        self.ec2 = ec2
        # One torch thread each: up to 15 workers share the machine's cores without thrashing.
        self.env = {"FR_TORCH_THREADS": "1", **env}
        self.workers = {}
        self.stopping = set()
        self.broken = set()

    def step(self):
        running = {
            i["id"]: i["name"] for i in common.describe_pool(self.ec2, self.config) if i["state"] == "running"
        }
        for instance_id, child in list(self.workers.items()):
            code = child.popen.poll()
            if code is not None:
                del self.workers[instance_id]
                self.stopping.discard(instance_id)
                log.info("event=worker_exited instance=%s pid=%s code=%s", instance_id, child.pid, code)
                if code == common.EX_CONFIG:
                    self.broken.add(instance_id)
            elif instance_id not in running and instance_id not in self.stopping:
                child.signal()
                self.stopping.add(instance_id)
                log.info("event=worker_stopping instance=%s pid=%s", instance_id, child.pid)
        for instance_id, name in running.items():
            if instance_id not in self.workers and instance_id not in self.broken:
                child = Child(f"worker-{name}", [PYTHON, str(common.PROJECT_DIR / "worker.py")], self.env,
                              log_path=LOG_DIR / f"{name}.log")
                self.workers[instance_id] = child
                log.info("event=worker_started instance=%s name=%s pid=%s", instance_id, name, child.pid)

    def stop_all(self):
        for child in self.workers.values():
            child.signal()
        for child in self.workers.values():
            child.stop()
        self.workers.clear()


def run(config, stop):
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    # Dummy credentials: local mode never sends real ones anywhere, not even to moto.
    os.environ.update(AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local", AWS_SESSION_TOKEN="local")
    services = []
    launcher = None
    try:
        moto = Child("moto", [MOTO_SERVER, "-H", "127.0.0.1", "-p", str(config.moto_port)],
                     log_path=LOG_DIR / "moto.log")
        services.append(moto)
        moto_port = moto.wait_for(r"Running on http://127\.0\.0\.1:(\d+)", START_TIMEOUT)[1]
        endpoint = f"http://127.0.0.1:{moto_port}"
        config = dataclasses.replace(config, endpoint_url=endpoint, ami_id=config.ami_id or LOCAL_AMI)
        env = dict(os.environ, FR_ENDPOINT_URL=endpoint, FR_AMI_ID=config.ami_id)
        ec2 = common.client(config, "ec2")
        provision(config, lambda service: common.client(config, service))
        web = Child("web", [PYTHON, str(common.PROJECT_DIR / "web.py")], env, log_path=LOG_DIR / "web.log")
        services.append(web)
        port = web.wait_for(r"event=listening host=\S+ port=(\d+)", START_TIMEOUT)[1]
        scaler = Child("autoscaler", [PYTHON, str(common.PROJECT_DIR / "autoscaler.py")], env,
                       log_path=LOG_DIR / "autoscaler.log")
        services.append(scaler)
        scaler.wait_for("event=ready", START_TIMEOUT)
        launcher = Launcher(config, ec2, env)
        log.info("event=ready url=http://%s:%s/ endpoint=%s logs=%s", config.host, port, endpoint, LOG_DIR)
        log.info("try: curl -F inputFile=@../shared/fixtures/face_images_100/test_00.jpg http://%s:%s/",
                 config.host, port)
        while not stop.is_set():
            dead = [s.name for s in services if s.popen.poll() is not None]
            if dead:
                log.error("event=service_died name=%s detail=see %s", ",".join(dead), LOG_DIR)
                return 1
            launcher.step()
            stop.wait(LAUNCH_INTERVAL)
        return 0
    finally:
        log.info("event=stopping")
        for service in reversed(services[1:]):
            service.stop()
        if launcher:
            launcher.stop_all()
        if services:
            services[0].stop()
        log.info("event=stopped")


def main():
    config = common.load_config_or_exit()
    common.setup_logging(config.log_level)
    common.require_file(config.weights, "run ./setup.sh local, which makes stand-in weights")
    common.require_file(config.gallery, "run ./setup.sh local, which enrols a stand-in gallery")
    stop = threading.Event()
    common.stop_on_signals(stop)
    sys.exit(run(config, stop))


if __name__ == "__main__":
    main()
