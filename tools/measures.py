"""The benchmark's instruments (tools/bench.py): the model alone, a fresh worker's start, moto's own
floor for the service's path, what the IAM check adds to a call, the CPU and memory of the stack's
processes, and the cold start read from the services' logs."""

import os
import re
import statistics
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

from core import settings, statefiles
from simulation import awsiam
from simulation.procs import children_by_parent
from tools.harness import (
    IMAGES,
    PYTHON,
    aws,
    new_queue,
)

TICKS = os.sysconf("SC_CLK_TCK")
BENCH_STATE = settings.PROJECT_DIR / "var/bench-state"
LOG_DIR = statefiles.log_dir(BENCH_STATE)  # the local stack's


def median_ms(samples):
    return round(statistics.median(samples) * 1000, 2)


def model_direct(weights, gallery, images, batch, rounds=3):
    """(images/s one image at a time, images/s in batches of `batch`): one process, torch's default
    threads, the best of `rounds` passes over `images` (the best: other load on this machine only
    ever slows a pass, and a faster direct figure makes the end-to-end ratio harder to meet)."""
    from model import Recognizer

    recognizer = Recognizer(weights, gallery)
    recognizer.recognize(images[0])

    def best(size):
        passes = []
        for _ in range(rounds):
            started = time.monotonic()
            for n in range(0, len(images), size):
                recognizer.recognize_batch(images[n : n + size])
            passes.append(len(images) / (time.monotonic() - started))
        return max(passes)

    return best(1), best(batch)


def worker_start(weights, gallery, image):
    """(import s, model load s, first inference s) of a fresh process, as systemd starts worker.py
    on an app instance."""
    code = (
        "import sys, time; t = time.monotonic(); import torch, worker, model.recognizer; i = time.monotonic() - t; "
        "from model import Recognizer; t = time.monotonic(); r = Recognizer(*sys.argv[1:3]); "
        "m = time.monotonic() - t; data = open(sys.argv[3], 'rb').read(); t = time.monotonic(); "
        "r.recognize(data); print(i, m, time.monotonic() - t)"
    )
    done = subprocess.run(
        [PYTHON, "-c", code, str(weights), str(gallery), str(image)],
        capture_output=True,
        text=True,
        check=True,
        cwd=settings.PROJECT_DIR,
    )
    return tuple(round(float(seconds), 2) for seconds in done.stdout.split())


def plumbing_floor(endpoint, rounds=50):
    """Medians (ms) of the calls on a request's critical path, against this moto, without our code."""
    s3, sqs = aws(endpoint, "s3"), aws(endpoint, "sqs")
    s3.create_bucket(Bucket="bench-floor")
    url = new_queue(sqs, "bench-floor")
    data = (IMAGES / "test_00.jpg").read_bytes()
    puts, gets, wakes = [], [], []
    for n in range(rounds):
        started = time.perf_counter()
        s3.put_object(Bucket="bench-floor", Key=str(n), Body=data)
        puts.append(time.perf_counter() - started)
        started = time.perf_counter()
        s3.get_object(Bucket="bench-floor", Key=str(n))["Body"].read()
        gets.append(time.perf_counter() - started)
    woke = []
    for _ in range(rounds):
        receiver = threading.Thread(
            target=lambda: woke.append((sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5), time.perf_counter()))
        )
        receiver.start()
        time.sleep(0.02)  # let the receiver be in its long poll: what is measured is the wake-up
        started = time.perf_counter()
        sqs.send_message(QueueUrl=url, MessageBody="x" * 200)
        receiver.join()
        reply, at = woke.pop()
        wakes.append(at - started)
        sqs.delete_message(QueueUrl=url, ReceiptHandle=reply["Messages"][0]["ReceiptHandle"])
    floor = {"s3_put_ms": median_ms(puts), "sqs_send_to_wake_ms": median_ms(wakes), "s3_get_ms": median_ms(gets)}
    floor["floor_ms"] = round(floor["s3_put_ms"] + 2 * floor["sqs_send_to_wake_ms"] + floor["s3_get_ms"], 2)
    return floor


def iam_check_ms(endpoint, rounds=200):
    """What the AWS-like stack's IAM check adds to a call (ms, median): GetQueueAttributes of the
    request queue as the operator (not checked) and as the web role (checked), alternately."""
    import boto3

    def client(key):
        return boto3.client(
            "sqs",
            region_name="us-east-1",
            endpoint_url=endpoint,
            aws_access_key_id=key,
            aws_secret_access_key="local",
            aws_session_token="local",
        )

    clients = {"operator": client("local"), "role": client(awsiam.credentials("bench-web")["AWS_ACCESS_KEY_ID"])}
    url = clients["operator"].get_queue_url(QueueName="bench-req-queue")["QueueUrl"]
    times = {name: [] for name in clients}
    for _ in range(rounds):
        for name, sqs in clients.items():
            started = time.perf_counter()
            sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            times[name].append(time.perf_counter() - started)
    return {"iam_unchecked_call_ms": median_ms(times["operator"]), "iam_checked_call_ms": median_ms(times["role"])}


class Processes:
    """The stack's process tree: role of each pid, CPU seconds and memory (PSS) by role."""

    ROLES = ("moto", "web", "autoscaler", "forkserver")

    def __init__(self, root_pid):
        self.root = root_pid
        self.peak = {}

    def tree(self):
        """{pid: role}: the stack's own process (the launcher, and the reader of every service's log
        lines), its children by command, and the fork server's children as workers."""
        children = children_by_parent()
        roles = {self.root: "launcher"}
        for pid in children.get(self.root, []):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            role = next((r for r in self.ROLES if r in command), "other")
            roles[pid] = role
            if role == "forkserver":
                roles.update({worker: "worker" for worker in children.get(pid, [])})
        return roles

    def cpu_by_role(self):
        cpu = {}
        for pid, role in self.tree().items():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            cpu[role] = cpu.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / TICKS
        return cpu

    def sample_memory(self):
        """Keep, by role, the peak of: process count, PSS of one process, PSS summed, RSS of one."""
        now = {}
        for pid, role in self.tree().items():
            try:
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            kib = {k: int(v) for k, v in re.findall(r"^(Rss|Pss):\s+(\d+) kB", rollup, re.M)}
            count, total, pss, rss = now.get(role, (0, 0, 0, 0))
            now[role] = (count + 1, total + kib["Pss"] / 1024, max(pss, kib["Pss"] / 1024), max(rss, kib["Rss"] / 1024))
        for role, values in now.items():
            peak = self.peak.setdefault(role, {"count": 0, "pss_mib_total": 0, "pss_mib_max": 0, "rss_mib_max": 0})
            for key, value in zip(("count", "pss_mib_total", "pss_mib_max", "rss_mib_max"), values):
                peak[key] = max(peak[key], value)


def log_time(path, pattern, after):
    """Wall time (epoch s) of the first line of a service log matching `pattern` at or after `after`."""
    for line in Path(path).read_text(errors="replace").splitlines():
        if re.search(pattern, line):
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if stamp >= after - 0.001:
                return stamp
    return None


def cold_start_split(t0, first_answer, timings=None):
    """Seconds of each step from the burst's first upload to its first answer, from the logs; with
    the AWS-like `timings`, the simulated EC2 pending time and OS boot are steps of their own."""
    decided = log_time(LOG_DIR / "autoscaler.log", r"event=decision .* started=[1-9]", t0)
    workers = sorted(LOG_DIR.glob("app-tier-instance-*.log"))
    forked = min(filter(None, (log_time(p, "event=worker_forked", t0) for p in workers)), default=None)
    ready = min(filter(None, (log_time(p, "event=ready", t0) for p in workers)), default=None)
    if not (decided and forked and ready):
        return None
    steps = {"scale_decision_s": round(decided - t0, 3)}
    if timings:
        steps["ec2_pending_s"] = round(timings["pending"], 3)
        steps["os_boot_s"] = round(timings["boot"], 3)
        steps["launcher_to_worker_forked_s"] = round(forked - decided - timings["pending"] - timings["boot"], 3)
    else:
        steps["instance_start_to_worker_forked_s"] = round(forked - decided, 3)
    steps["worker_forked_to_polling_s"] = round(ready - forked, 3)
    steps["polling_to_first_answer_s"] = round(first_answer - ready, 3)
    return steps


def memory(processes):
    """The peak memory of the workers, the fork server and the web tier, sampled over the burst."""
    peak = processes.peak
    workers = peak.get("worker", {})
    return {
        "workers_peak": workers.get("count", 0),
        "worker_pss_mib_max": round(workers.get("pss_mib_max", 0)),
        "workers_plus_forkserver_pss_mib_total": round(
            workers.get("pss_mib_total", 0) + peak.get("forkserver", {}).get("pss_mib_total", 0)
        ),
        "worker_rss_mib_max": round(workers.get("rss_mib_max", 0)),
        "web_pss_mib_max": round(peak.get("web", {}).get("pss_mib_max", 0)),
    }
