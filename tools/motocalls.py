"""moto's own CPU for each of the calls the stack makes most, on the AWS-like stack (as the tests and
local mode run it), 15 app-tier members launched:

    .venv/bin/python -m tools.motocalls [--rounds 300]

prints, for each call, the milliseconds of CPU the moto server spent per call (from /proc, so
the client's own work is not counted) and the client's wall time per call. What the fixes in
simulation/motoserver.py saved is measured with this; docs/performance.md has the numbers."""

import argparse
import os
import tempfile
import time
from pathlib import Path

from core import settings
from deploy.provision import provision
from simulation import awsiam
from simulation.localstack import MOTO_SERVER
from simulation.procs import Child
from tools.harness import aws, child_env

TICKS = os.sysconf("SC_CLK_TCK")
MEMBERS = 15


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def calls(endpoint, config):
    """{name: call}: what the launcher, the autoscaler, the workers and the tests ask most."""
    ec2, sqs = aws(endpoint, "ec2"), aws(endpoint, "sqs")
    app_sqs = as_role(endpoint, "sqs", config.role("app"))
    url = sqs.get_queue_url(QueueName=config.request_queue)["QueueUrl"]
    ec2.run_instances(ImageId="ami-12345678", MinCount=MEMBERS, MaxCount=MEMBERS, InstanceType="t3.small")
    return {
        f"DescribeInstances ({MEMBERS} instances)": ec2.describe_instances,
        "DescribeInstanceStatus (all)": lambda: ec2.describe_instance_status(IncludeAllInstances=True),
        "ReceiveMessage (none waiting, the app role)": lambda: app_sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0),
        "GetQueueAttributes": lambda: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"]),
    }


def as_role(endpoint, service, role):
    """A client that calls as `role` (the AWS-like stack checks its policies)."""
    import boto3

    keys = {name.lower(): value for name, value in awsiam.credentials(role).items()}
    return boto3.client(service, region_name="us-east-1", endpoint_url=endpoint, **keys)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        env = child_env(FR_STATE_DIR=state, FR_SIMULATE="aws", FR_SIMULATE_TIME_SCALE="0.05")
        moto = Child("moto", [*MOTO_SERVER, "-H", "127.0.0.1", "-p", "0"], env, log_path=Path(state, "moto.log"))
        try:
            endpoint = moto.wait_for(r"Running on (http://127\.0\.0\.1:\d+)", 60)[1]
            config = settings.load_config({"FR_PREFIX": "motocalls", "FR_ENDPOINT_URL": endpoint, "FR_WARM_UP": "0"})
            provision(config, lambda service: aws(endpoint, service))
            for name, call in calls(endpoint, config).items():
                call()  # what moto makes once (a service's model, a backend) is not counted
                cpu, began = cpu_seconds(moto.popen.pid), time.perf_counter()
                for _ in range(args.rounds):
                    call()
                per_call = 1000 / args.rounds
                moto_ms = (cpu_seconds(moto.popen.pid) - cpu) * per_call
                print(f"{name}: moto {moto_ms:.1f} ms of CPU, {(time.perf_counter() - began) * per_call:.1f} ms a call")
        finally:
            moto.stop()


if __name__ == "__main__":
    main()
