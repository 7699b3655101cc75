"""Benchmark: what the cloud plumbing costs next to the model, on the local stack. Prints a table
and writes the same numbers as JSON (var/bench.json), so runs can be compared across commits.

    .venv/bin/python -m tools.bench [--requests 100] [--concurrency 100] [--sequential 50] [--aws-like SCALE]
                                    [--hibernate 0|1] [--warm-up 0|1] [--min-instances N] [--spare-instances N] [--results-table]

`--aws-like SCALE` runs the stack AWS-like (FR_SIMULATE=aws, simulation/awslike/) with AWS's timings
times SCALE (1: as on AWS): instances take time in `pending`, boot before their worker starts,
take time to stop, SQS's counts trail the truth; provisioning warms the pool up (FR_WARM_UP,
`--warm-up 0` to leave it cold). The first burst's first answer is split into its steps (from a
resume, or from a boot). A back-to-back burst follows 5 s (AWS's, scaled) after the first one's
scale-in, while its members are still stopping (spare members take it; `--spare-instances 0` shows
it without them); then IDLE_BURSTS bursts, each once the pool is at rest after the one before (an
idle spell: every member stopped, and warmed up again where it stopped plainly), and with
`--min-instances N` from a warm floor of N running instances. Without --aws-like,
moto starts instances at once (the stack's own costs, comparable across commits). With
`--results-table` (FR_RESULTS_TABLE=1) the first burst is followed at once by the course's rerun:
the same uploads again, the input bucket emptied, answered from the table (whole run / N).

In one run on this machine (absolute times are noisy on a shared 2-core machine; ratios hold):
- direct: images/s through the model in this process, all cores, one image at a time (the goal's
  reference: the model called as a library, image by image) and in batches of FR_BATCH as the
  workers call it (printed beside it, so the batching's share of any gain is plain); and how long
  a fresh worker process takes to import torch and load the model (an app instance's start);
- a burst of N fixture uploads at once against the local stack from 0 instances (each upload's
  bytes made distinct): end-to-end images/s once answers
  flow, latency, CPU seconds used by each part of the stack, the cold start split into its steps
  (from the services' logs), seconds from the last answer to 0 running instances, and the peak
  memory of workers and web tier (PSS: shared pages counted once);
- per-request pipeline overhead: sequential uploads of distinct bytes (a fixture with a trailing
  comment: same picture, new hash) against a warm worker, latency minus the worker's model time
  (X-Model-Ms), beside the floor: the same moto's own S3 put + SQS send-to-wake + S3 get +
  send-to-wake, measured here with boto3;
- with --results-table, a repeated image answered from the results table;
- with --aws-like, the seconds pool repair takes to replace a terminated member (launched by the
  autoscaler as the web role), the calls IAM denied any role (`iam_denied_calls`: none, or the
  run fails), and what the stack's IAM check adds to a call (a role's against the operator's).
"""

import argparse
import json
import re
import statistics
import sys
import threading
import time
from pathlib import Path

from common import quantile
from core import cloud, settings
from scaling import pool
from simulation import awslike
from simulation.localstack import LOCAL_STACK
from simulation.procs import Child
from tools.harness import (
    IMAGES,
    aws,
    child_env,
    expected_answers,
    running_instances,
    stand_in_files,
    table_hits,
    wait_until,
)
from tools.loadgen import Run, upload
from tools.measures import (
    BENCH_STATE,
    LOG_DIR,
    Processes,
    cold_start_split,
    iam_check_ms,
    log_time,
    median_ms,
    memory,
    model_direct,
    plumbing_floor,
    worker_start,
)

# Reading a process's PSS (/proc/PID/smaps_rollup) walks its page tables: ~7 ms of CPU for a worker,
# so sampling 17 processes every 0.25 s took a quarter of this machine from the burst it measures,
# and every 2 s still 3 CPU-s of a 1000-upload burst. Memory changes slowly; it is also sampled once
# at the end of the burst.
SAMPLE_EVERY = 5.0
# Bursts after an idle spell (the pool at rest: stopped, and warmed up again), one after another.
IDLE_BURSTS = 3


def later_bursts(url, ec2, jobs, expected, args, timings, stack_log):
    """The bursts after the first (AWS-like only): one back to back, then IDLE_BURSTS after idle spells."""
    results = {"back_to_back_burst": back_to_back_burst(url, ec2, jobs, expected, args.concurrency, timings)}
    wait_until(lambda: running_instances(ec2) == args.min_instances, 120, interval=0.1, what="scale-in")
    for number in range(1, IDLE_BURSTS + 1):
        again = [(name, distinct_variant(data, f"idle-{number}-{n}")) for n, (name, data) in enumerate(jobs)]
        results[f"idle_burst_{number}"] = idle_burst(url, ec2, again, expected, args, timings, stack_log)
    return results


def at_rest(ec2, config, warm, floor=0):
    """Whether the pool is at rest after a burst: `floor` members running (the warm floor), the
    others stopped, and with `warm` (the stack hibernates and warms up) every stopped member launched
    for hibernation hibernated (warming.py's idle-spell work done)."""
    members = pool.describe(ec2, config)
    stopped = [i for i in members if i["state"] == "stopped"]
    return (
        sum(i["state"] == "running" for i in members) == floor
        and len(stopped) == len(members) - floor
        and (not warm or all(i["hibernated"] or not i["hibernates"] for i in stopped))
    )


def idle_burst(url, ec2, jobs, expected, args, timings, stack_log):
    """A burst once the pool is at rest after the previous one (an idle spell): its first answer,
    all answered, the first answer's steps (a resume, or a boot), and the scale-in after it."""
    config = settings.load_config({"FR_PREFIX": "bench"})
    rested = time.monotonic()
    warm = bool(args.hibernate and args.warm_up)
    wait_until(
        lambda: at_rest(ec2, config, warm, args.min_instances),
        timings["stopping"] * 6 + 300,
        interval=0.5,
        what="the pool at rest",
    )
    idle = time.monotonic() - rested
    t0 = time.time()
    burst = Run(url, jobs, args.concurrency, expected).go()
    last_answer = time.monotonic()
    wait_until(lambda: running_instances(ec2) == args.min_instances, 60, interval=0.02, what="scale-in")
    return {
        "idle_spell_s": round(idle, 1),
        "scale_in_s": round(time.monotonic() - last_answer, 2),
        "wrong_or_failed": burst["count"] - burst["ok"],
        "first_answer_s": burst["first_answer_s"],
        "all_answered_s": burst["seconds"],
        "split": first_answer_split(t0, t0 + burst["first_answer_s"], timings, stack_log),
    }


def first_answer_split(t0, first, timings, stack_log):
    """The steps to a burst's first answer (from `t0`, at `first`): from a resume when a worker
    resumed before it, else from a boot (cold_start_split)."""
    decided = log_time(LOG_DIR / "autoscaler.log", r"event=decision .* started=[1-9]", t0)
    resumed = log_time(stack_log, "event=worker_resumed", t0)
    if not (timings and decided and resumed and resumed < first):
        return cold_start_split(t0, first, timings)
    return dict(
        scale_decision_s=round(decided - t0, 3),
        ec2_pending_s=round(timings["pending"], 3),
        resume_s=round(timings["resume"], 3),
        launcher_lag_s=round(resumed - decided - timings["pending"] - timings["resume"], 3),
        resumed_to_first_answer_s=round(first - resumed, 3),
    )


def pool_repair(ec2, config, number=7):
    """Seconds from terminating member `number` until its replacement has settled, running or
    stopped (launched as the web role by the autoscaler: IAM enforced on the AWS-like stack; with a
    warm floor the replacement may be the member kept running)."""
    victim = next(i["id"] for i in pool.describe(ec2, config) if i["name"] == pool.instance_name(number))
    started = time.monotonic()
    ec2.terminate_instances(InstanceIds=[victim])
    wait_until(
        lambda: [
            i
            for i in pool.describe(ec2, config)
            if i["name"] == pool.instance_name(number) and i["id"] != victim and i["state"] in ("running", "stopped")
        ],
        600,
        interval=0.5,
        what=f"a settled {pool.instance_name(number)} again",
    )
    return round(time.monotonic() - started, 1)


def back_to_back_burst(url, ec2, jobs, expected, concurrency, timings, after=5.0):
    """A burst `after` seconds (AWS's, scaled as the stack's) after the previous burst's scale-in,
    as a user who sends one batch after another does: its first answer, and all answered."""
    config = settings.load_config({"FR_PREFIX": "bench"})
    delay = after * timings["stopping"] / awslike.TIMINGS["stopping"]
    threading.Event().wait(delay)  # the scenario's pause, not a wait for anything
    stopping = sum(i["state"] == "stopping" for i in pool.describe(ec2, config))
    burst = Run(url, [(name, distinct_variant(data, "b2b")) for name, data in jobs], concurrency, expected).go()
    return {
        "after_scale_in_s": round(delay, 2),
        "members_stopping_at_start": stopping,
        "wrong_or_failed": burst["count"] - burst["ok"],
        "first_answer_s": burst["first_answer_s"],
        "all_answered_s": burst["seconds"],
    }


def distinct_variant(data, n):
    """The same JPEG with a trailing comment: same picture and answer, different bytes and hash."""
    return data + f"bench-{n}-{time.time_ns()}".encode()


def sequential(url, count, images):
    """Per-request (latency s, model s) of `count` uploads one after another."""
    samples = []
    for n in range(count):
        stem, data = images[n % len(images)]
        started = time.perf_counter()
        status, _, headers = upload(url, f"{stem}.jpg", distinct_variant(data, n), with_headers=True)
        latency = time.perf_counter() - started
        if status == 200 and "X-Model-Ms" in headers:
            samples.append((latency, float(headers["X-Model-Ms"]) / 1000))
    return samples


def arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--sequential", type=int, default=50)
    parser.add_argument("--json", default="var/bench.json")
    parser.add_argument(
        "--aws-like", type=float, metavar="SCALE", help="AWS-like stack with AWS's timings times SCALE (1: as on AWS)"
    )
    parser.add_argument("--hibernate", type=int, choices=(0, 1), default=1, help="FR_HIBERNATE of the stack")
    parser.add_argument("--warm-up", type=int, choices=(0, 1), default=1, help="FR_WARM_UP of the stack")
    parser.add_argument("--min-instances", type=int, default=0, help="FR_MIN_INSTANCES: the warm floor")
    parser.add_argument("--spare-instances", type=int, help="FR_SPARE_INSTANCES (default: as many as the maximum)")
    parser.add_argument("--results-table", action="store_true", help="FR_RESULTS_TABLE=1, and the course's rerun")
    return parser.parse_args()


def burst(url, ec2, processes, jobs, expected, args, timings, stack_log):
    """The first burst, from a pool at rest: answers, latencies, CPU by role, scale-in."""
    stop_sampling = threading.Event()

    def sample():
        while not stop_sampling.is_set():
            processes.sample_memory()
            stop_sampling.wait(SAMPLE_EVERY)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu_before = processes.cpu_by_role()
    t0 = time.time()
    client_cpu = time.process_time()
    answered = Run(url, jobs, args.concurrency, expected).go()
    client_cpu = time.process_time() - client_cpu
    processes.sample_memory()  # once more with every worker still up, however short the burst
    cpu = {role: round(seconds - cpu_before.get(role, 0.0), 2) for role, seconds in processes.cpu_by_role().items()}
    last_answer = time.monotonic()
    wait_until(lambda: running_instances(ec2) == args.min_instances, 60, interval=0.02, what="scale-in")
    results = {"scale_in_s": round(time.monotonic() - last_answer, 2)}
    stop_sampling.set()
    sampler.join()
    results["burst_wrong_or_failed"] = answered["count"] - answered["ok"]
    results["burst_first_answer_s"] = answered["first_answer_s"]
    results["burst_seconds"] = answered["seconds"]
    results["e2e_images_per_s_once_answering"] = round(
        (answered["count"] - 1) / (answered["seconds"] - answered["first_answer_s"]), 2
    )
    results["burst_latency_p50_s"] = answered["latency_p50_s"]
    results["burst_latency_p95_s"] = answered["latency_p95_s"]
    results["burst_cpu_seconds_by_role"] = cpu
    # moto stands in for S3/SQS/EC2: on AWS its share of this machine's CPU is spent elsewhere.
    results["burst_cpu_share_moto"] = round(cpu.get("moto", 0) / sum(cpu.values()), 2)
    # The load generator (this process: 100 client threads, and the memory sampler) shares the cores too.
    results["burst_cpu_seconds_load_generator"] = round(client_cpu, 2)
    results["first_answer_split"] = first_answer_split(t0, t0 + answered["first_answer_s"], timings, stack_log)
    return results


def rerun_from_table(url, s3, ec2, jobs, expected, concurrency):
    """The course's rerun: the burst's uploads again at once, the input bucket emptied first and the
    results table kept, while the burst's members are still stopping: whole run / uploads."""
    config = settings.load_config({"FR_PREFIX": "bench"})
    cloud.empty_bucket(s3, config.in_bucket)
    stopping = sum(i["state"] == "stopping" for i in pool.describe(ec2, config))
    hits = table_hits(url)
    rerun = Run(url, jobs, concurrency, expected).go()
    return {
        "members_stopping_at_start": stopping,
        "wrong_or_failed": rerun["count"] - rerun["ok"],
        "answered_from_table": table_hits(url) - hits,
        "whole_run_s": rerun["seconds"],
        "whole_run_per_upload_s": round(rerun["seconds"] / rerun["count"], 4),
    }


def one_at_a_time(url, endpoint, fixtures, count, table):
    """Uploads one after another: the plumbing's time beside the model's, against its floor, and
    with the results `table`, answers from it."""
    samples = sequential(url, count, fixtures)
    overhead = sorted(latency - model for latency, model in samples)
    floor = plumbing_floor(endpoint)
    results = {
        "sequential_overhead_p50_ms": round(quantile(overhead, 0.5) * 1000, 1),
        "sequential_overhead_p95_ms": round(quantile(overhead, 0.95) * 1000, 1),
        "sequential_model_p50_ms": round(statistics.median(m for _, m in samples) * 1000, 1),
        **floor,
    }
    results["overhead_over_floor"] = round(results["sequential_overhead_p50_ms"] / floor["floor_ms"], 2)
    if not table:
        return results
    hits, before = [], table_hits(url)
    for _ in range(count + 1):  # the first answer is the worker's
        started = time.perf_counter()
        answer = upload(url, "test_00.jpg", fixtures[0][1])
        hits.append(time.perf_counter() - started)
        assert answer == (200, "test_00:Paul\n"), answer
    assert table_hits(url) - before == count, "not answered from the table"
    results["table_hit_p50_ms"] = median_ms(hits[1:])
    return results


def main():
    args = arguments()
    simulation = {"FR_SIMULATE": "aws", "FR_SIMULATE_TIME_SCALE": args.aws_like} if args.aws_like else {"FR_SIMULATE": ""}
    timings = awslike.timings(args.aws_like) if args.aws_like else None

    weights, gallery = stand_in_files()
    expected = expected_answers()
    stems = sorted(expected)
    fixtures = [(stem, (IMAGES / f"{stem}.jpg").read_bytes()) for stem in stems]
    batch = settings.load_config({}).batch  # the stack's: child_env passes no FR_* of this shell on
    direct, direct_batched = model_direct(weights, gallery, [data for _, data in fixtures], batch)
    imported, loaded, first_inference = worker_start(weights, gallery, IMAGES / f"{stems[0]}.jpg")

    env = stack_env(args, simulation, weights, gallery)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    stack_log = LOG_DIR / "bench-localstack.log"
    stack = Child("localstack", LOCAL_STACK, env, log_path=stack_log, cwd=settings.PROJECT_DIR)
    results = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "aws_like_time_scale": args.aws_like,
        "hibernate": args.hibernate,
        "min_instances": args.min_instances,
        "spare_instances": args.spare_instances,
    }
    try:
        # An AWS-like stack provisions its pool as on AWS: launched (in waves), waited on until
        # running, warmed up (each wave run past the launch rule until its guests are up) and stopped.
        patience = 120 + ((timings["agent_setup"] + timings["stopping"] * 4) * 2 if timings else 0)
        ready = stack.wait_for(r"event=ready url=(\S+) endpoint=(\S+)", patience)
        url, endpoint = ready[1], ready[2]
        ec2, sqs, s3 = aws(endpoint, "ec2"), aws(endpoint, "sqs"), aws(endpoint, "s3")
        model_load = Path(LOG_DIR / "forkserver.log").read_text()
        results["worker_process_import_s"] = imported
        results["worker_process_model_load_s"] = loaded
        results["worker_process_first_inference_s"] = first_inference
        results["local_forkserver_model_load_once_s"] = float(re.search(r"event=model_loaded seconds=([\d.]+)", model_load)[1])
        if args.min_instances:
            # The warm floor is started with the stack: the burst starts once it answers.
            wait_until(
                lambda: upload(url, "test_00.jpg", fixtures[0][1]) == (200, "test_00:Paul\n"),
                120,
                interval=0.5,
                what="the warm floor answering",
            )
            wait_until(lambda: running_instances(ec2) == args.min_instances, 60, what="back to the warm floor")
        processes = Processes(stack.pid)
        # Distinct bytes for every upload, as if from users who each have their own pictures.
        jobs = [
            (f"{fixtures[n % len(fixtures)][0]}.jpg", distinct_variant(fixtures[n % len(fixtures)][1], n))
            for n in range(args.requests)
        ]
        results["model_direct_images_per_s"] = round(direct, 2)
        results["model_direct_batched_images_per_s"] = round(direct_batched, 2)
        results.update(burst(url, ec2, processes, jobs, expected, args, timings, stack_log))
        if args.results_table:
            results["rerun_from_table"] = rerun_from_table(url, s3, ec2, jobs, expected, args.concurrency)
        request_url = sqs.get_queue_url(QueueName="bench-req-queue")["QueueUrl"]
        wait_until(
            lambda: sum(cloud.queue_depth(sqs, request_url)) == 0,
            10 + (timings or {}).get("sqs_count_lag", 0),
            what="request queue empty",
        )
        results["e2e_over_direct"] = round(results["e2e_images_per_s_once_answering"] / direct, 2)
        results["e2e_over_direct_batched"] = round(results["e2e_images_per_s_once_answering"] / direct_batched, 2)
        if timings:
            results.update(later_bursts(url, ec2, jobs, expected, args, timings, stack_log))
            results["pool_repair_s"] = pool_repair(ec2, settings.load_config({"FR_PREFIX": "bench"}))
        results.update(memory(processes))
        results.update(one_at_a_time(url, endpoint, fixtures, args.sequential, args.results_table))
        if timings:
            results.update(iam_check_ms(endpoint))
    finally:
        stack.stop()
    if timings:
        # Every call of the web tier, the autoscaler and the workers was checked against their roles.
        results["iam_denied_calls"] = [e for e in awslike.read_journal(BENCH_STATE) if e["action"] == "AccessDenied"]

    return report(results, args.json)


def stack_env(args, simulation, weights, gallery):
    """The benchmark's local stack's environment."""
    return child_env(
        FR_PORT=0,
        FR_MOTO_PORT=0,
        FR_PREFIX="bench",
        FR_WEIGHTS=weights,
        FR_GALLERY=gallery,
        FR_RESULTS_TABLE=int(args.results_table),
        FR_STATE_DIR=str(BENCH_STATE),
        FR_HIBERNATE=args.hibernate,
        FR_WARM_UP=args.warm_up,
        FR_MIN_INSTANCES=args.min_instances,
        **simulation,
        **({} if args.spare_instances is None else {"FR_SPARE_INSTANCES": args.spare_instances}),
    )


def report(results, json_path):
    """Print the results as a table, write them as JSON; the exit status: 1 if an answer was wrong
    or a call denied."""
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(json_path).write_text(json.dumps(results, indent=2) + "\n")
    failed = [results["burst_wrong_or_failed"], results.get("iam_denied_calls")] + [
        results.get(k, {}).get("wrong_or_failed")
        for k in ("rerun_from_table", "back_to_back_burst", *(f"idle_burst_{n}" for n in range(1, IDLE_BURSTS + 1)))
    ]
    return 1 if any(failed) else 0


if __name__ == "__main__":
    sys.exit(main())
