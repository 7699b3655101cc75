"""Soak: the whole local stack under a mixed load for a while, and what its web tier holds before
and after (a leak shows as a number that keeps growing). Prints a table, writes var/soak.json.

    .venv/bin/python -m tools.soak [--seconds 300] [--concurrency 50]

Each client thread sends, in turn, the kinds of KINDS: a good upload (a fixture with bytes of its
own, its answer checked), junk (1.5 MiB that is no image: 422, and removed from the input bucket
at once), a request line that is not HTTP (400), an upload whose client hangs up without reading
the answer, a client that sends half its body and goes silent (408 after FR_CLIENT_TIMEOUT), and
the status page. Every SAMPLE_SECONDS it notes the web tier's RSS, open files and threads; at the
end, the objects left in the input bucket and how many of each answer came back.
"""

import argparse
import itertools
import json
import os
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from core import settings, statefiles
from simulation.localstack import LOCAL_STACK
from simulation.procs import Child
from tools.harness import IMAGES, aws, child_env, expected_answers, stand_in_files
from tools.loadgen import multipart, numbered, request, upload
from tools.measures import Processes

SOAK_STATE = settings.PROJECT_DIR / "var/soak-state"
SAMPLE_SECONDS = 10.0
JUNK = os.urandom(1536 * 1024)
# A client that goes silent is let go after FR_CLIENT_TIMEOUT; the soak's is short, so that its
# threads keep sending.
CLIENT_TIMEOUT = 5


def web_tier(processes):
    """{rss_mib, fds, threads} of the web tier's process."""
    (pid,) = [pid for pid, role in processes.tree().items() if role == "web"]
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines())
    return {
        "rss_mib": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(fields["Threads"]),
    }


def raw(url, data, read=True):
    """Send `data` on a connection of its own; the status of the answer (None when not read)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=CLIENT_TIMEOUT * 4) as s:
        s.sendall(data)
        if not read:
            return None
        answer = s.recv(64)
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else None


def kinds(url, expected):
    """{kind: function(n) -> the answer's status, or "wrong"}."""
    stems = sorted(expected)

    def good(n):
        stem = stems[n % len(stems)]
        status, body = upload(url, f"{stem}.jpg", numbered((IMAGES / f"{stem}.jpg").read_bytes(), n))
        return status if status != 200 or body == f"{stem}:{expected[stem]}\n" else "wrong"

    def half_sent(n):
        content_type, body = multipart([("inputFile", "half.jpg", (IMAGES / "test_00.jpg").read_bytes())])
        head = f"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        return raw(url, head.encode() + body[: len(body) // 2])

    def hang_up(n):
        content_type, body = multipart([("inputFile", f"gone_{n}.jpg", numbered((IMAGES / "test_01.jpg").read_bytes(), n))])
        head = f"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        return raw(url, head.encode() + body, read=False)

    return {
        "good": good,
        "junk": lambda n: upload(url, "junk.jpg", JUNK)[0],
        "not_http": lambda n: raw(url, b"\x16\x03\x01 not a request line\r\n\r\n"),
        "hang_up": hang_up,
        "half_sent": half_sent,
        "status_page": lambda n: request(url + "status?format=json", "GET")[0],
    }


def soak(url, seconds, concurrency, processes, expected):
    """Run the mixed load for `seconds`: ({kind: Counter of answers}, samples of the web tier)."""
    calls = kinds(url, expected)
    answers = {kind: Counter() for kind in calls}
    numbers = itertools.count()
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def client(offset):
        order = list(calls)
        for turn in itertools.count(offset):
            if time.monotonic() > end:
                return
            kind = order[turn % len(order)]
            try:
                outcome = calls[kind](next(numbers))
            except (OSError, ValueError) as e:  # a connection reset, an answer that is no HTTP
                outcome = type(e).__name__
            with lock:
                answers[kind][outcome] += 1

    samples = [dict(web_tier(processes), at_s=0)]
    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        clients = [pool.submit(client, n) for n in range(concurrency)]
        stop = threading.Event()
        while not stop.wait(SAMPLE_SECONDS) and time.monotonic() < end:
            samples.append(dict(web_tier(processes), at_s=round(time.monotonic() - started)))
    for done in clients:
        done.result()  # a client that died of anything else says so here
    samples.append(dict(web_tier(processes), at_s=round(time.monotonic() - started)))
    return {kind: dict(counts) for kind, counts in answers.items()}, samples


def bucket_objects(s3, bucket):
    """(objects, MiB) in `bucket`."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    sizes = [o["Size"] for page in pages for o in page.get("Contents", [])]
    return len(sizes), round(sum(sizes) / 2**20, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--json", default="var/soak.json")
    args = parser.parse_args()
    weights, gallery = stand_in_files()
    env = child_env(
        FR_PORT=0,
        FR_MOTO_PORT=0,
        FR_PREFIX="soak",
        FR_WEIGHTS=weights,
        FR_GALLERY=gallery,
        FR_STATE_DIR=str(SOAK_STATE),
        FR_CLIENT_TIMEOUT=CLIENT_TIMEOUT,
    )
    logs = statefiles.log_dir(SOAK_STATE)
    logs.mkdir(parents=True, exist_ok=True)
    stack = Child("localstack", LOCAL_STACK, env, log_path=logs / "localstack.log", cwd=settings.PROJECT_DIR)
    try:
        url, endpoint = stack.wait_for(r"event=ready url=(\S+) endpoint=(\S+)", 120).groups()
        answers, samples = soak(url, args.seconds, args.concurrency, Processes(stack.pid), expected_answers())
        objects, mib = bucket_objects(aws(endpoint, "s3"), settings.load_config({"FR_PREFIX": "soak"}).in_bucket)
    finally:
        stack.stop()
    results = {"seconds": args.seconds, "concurrency": args.concurrency, "answers": answers, "web_tier": samples}
    # What the input bucket should hold: the uploads answered with a name (the good ones, and those
    # whose clients hung up: answered all the same), none of the junk.
    results.update(input_bucket_objects=objects, input_bucket_mib=mib)
    Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"{'kind':<12} answers")
    for kind, counts in answers.items():
        print(f"{kind:<12} {', '.join(f'{k}: {v}' for k, v in sorted(counts.items(), key=str))}")
    print(f"{'at s':>6} {'RSS MiB':>8} {'fds':>5} {'threads':>8}")
    for s in samples:
        print(f"{s['at_s']:>6} {s['rss_mib']:>8} {s['fds']:>5} {s['threads']:>8}")
    sent = answers["good"].get(200, 0) + sum(answers["hang_up"].values())
    print(f"input bucket: {objects} objects, {mib} MiB (good uploads answered and uploads hung up on: {sent})")
    wrong = answers["good"].get("wrong", 0)
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
