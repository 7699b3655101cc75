"""Benchmark: runs the local stack and prints what one burst costs, as a table and as JSON.

    .venv/bin/python tools/bench.py [--requests 100] [--concurrency 100] [--json var/bench.json]

Measures, in one run on this machine: the model alone (images/s in this process, all cores), then a
burst of N fixture uploads against the local stack starting from 0 instances: time to the first
answer (cold start), the whole burst's throughput and latency, seconds from the last answer to 0
running instances, and the peak memory (RSS) of the worker processes and of the web tier.
Absolute times are noisy on a shared 2-core machine; compare runs made on the same machine.
"""
import argparse
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import (  # noqa: E402
    IMAGES, PYTHON, aws, child_env, expected_answers, running_instances, stand_in_files, upload, wait_until,
)
from tools.procs import Child  # noqa: E402

RSS_EVERY = 0.5


def model_throughput(weights, gallery, images):
    from model import Recognizer

    recognizer = Recognizer(weights, gallery)
    recognizer.recognize(images[0])
    started = time.monotonic()
    for data in images:
        recognizer.recognize(data)
    return len(images) / (time.monotonic() - started)


def rss_by_role(parent_pid):
    """{role: [RSS MiB of each child process of `parent_pid` in that role]}."""
    roles = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != parent_pid:
                continue
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = (stat.parent / "status").read_text()
        except (OSError, IndexError, ValueError):
            continue
        rss_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
        role = next((r for r in ("worker", "web", "autoscaler", "moto") if r in command), "other")
        roles.setdefault(role, []).append(rss_kib / 1024)
    return roles


class PeakMemory:
    def __init__(self, parent_pid):
        self.parent_pid = parent_pid
        self.peak = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            for role, sizes in rss_by_role(self.parent_pid).items():
                old = self.peak.get(role, {"each_max": 0, "total": 0})
                self.peak[role] = {"each_max": max(old["each_max"], max(sizes)), "total": max(old["total"], sum(sizes)),
                                   "count": max(old.get("count", 0), len(sizes))}
            self.stop.wait(RSS_EVERY)

    def finish(self):
        self.stop.set()
        self.thread.join()
        return self.peak


def burst(url, stems, concurrency):
    """Upload the fixtures; (answers, per-request seconds, first answer and end times)."""
    def one(stem):
        started = time.monotonic()
        answer = upload(url, f"{stem}.jpg", (IMAGES / f"{stem}.jpg").read_bytes())
        return answer, started, time.monotonic()

    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, stems))
    return [r[0] for r in results], [r[2] - r[1] for r in results], min(r[2] for r in results), max(r[2] for r in results)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--json", default="var/bench.json")
    args = parser.parse_args()

    weights, gallery = stand_in_files()
    expected = expected_answers()
    stems = [sorted(expected)[i % len(expected)] for i in range(args.requests)]
    images = [(IMAGES / f"{s}.jpg").read_bytes() for s in stems]
    direct = model_throughput(weights, gallery, images)

    env = child_env(FR_PORT=0, FR_MOTO_PORT=0, FR_PREFIX="bench", FR_WEIGHTS=weights, FR_GALLERY=gallery)
    stack = Child("localstack", [PYTHON, "tools/localstack.py"], env)
    try:
        ready = stack.wait_for(r"event=ready url=(\S+) endpoint=(\S+)", 60)
        ec2 = aws(ready[2], "ec2")
        memory = PeakMemory(stack.pid)
        started = time.monotonic()
        answers, latencies, first, last = burst(ready[1], stems, args.concurrency)
        wait_until(lambda: running_instances(ec2) == 0, 30, interval=0.02, what="scale-in to 0")
        scale_in = time.monotonic() - last
        peak = memory.finish()
    finally:
        stack.stop()

    wrong = sum(1 for stem, answer in zip(stems, answers) if answer != (200, f"{stem}:{expected[stem]}\n"))
    quantiles = statistics.quantiles(latencies, n=20)
    results = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "wrong_answers": wrong,
        "model_direct_images_per_s": round(direct, 2),
        "cold_start_first_answer_s": round(first - started, 2),
        "burst_seconds": round(last - started, 2),
        "burst_images_per_s": round(args.requests / (last - started), 2),
        "after_first_answer_images_per_s": round((args.requests - 1) / max(last - first, 1e-9), 2),
        "latency_p50_s": round(quantiles[9], 3),
        "latency_p95_s": round(quantiles[18], 3),
        "scale_in_to_zero_s": round(scale_in, 2),
        "workers_peak": peak.get("worker", {}).get("count", 0),
        "worker_rss_max_mib": round(peak.get("worker", {}).get("each_max", 0)),
        "workers_rss_total_mib": round(peak.get("worker", {}).get("total", 0)),
        "web_rss_max_mib": round(peak.get("web", {}).get("each_max", 0)),
    }
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
