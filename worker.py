"""App tier worker: names the faces in the images the web tier queues, a few at a time.

Loads the model once (FR_WEIGHTS) and the gallery from its bucket (core/gallery.py: again whenever a
request names a newer version than it has), then long-polls the request queue for up to FR_BATCH
requests at a time. It reads their images from the input bucket (in parallel), recognises them in
one pass through the model, sends `{id, stem, name}` (or `{id, stem, error}` for an image it
cannot name) to each message's reply queue in one call, then, off the critical path, writes
`stem -> name` to the output bucket and only then deletes the requests. While it works, a heartbeat
keeps the messages invisible. A request whose handling fails unexpectedly, or whose worker dies, is
not deleted: SQS shows it again after the visibility timeout (FR_VISIBILITY_TIMEOUT), and after a
bounded number of receives moves it to the dead-letter queue, where the web tier sees it.

An app instance may be hibernated (FR_HIBERNATE): the process is frozen where it is, for seconds
or hours, and its connections die meanwhile without a word reaching it. Two hooks (on AWS,
systemd/face-worker-sleep.service runs `worker.py --pause` before the machine hibernates and
`worker.py --resume` after; in local mode the launcher sends the same signals) make that clean:
SIGUSR1 asks the worker to finish the poll and the batch in hand and take no more, and it says in
FR_STATE_DIR/worker.json when it has (a request SQS would hand to a frozen poll waits out the
visibility timeout); SIGUSR2 lets it go on, on new connections. Without the hooks it still holds:
SIGUSR2 breaks a long poll left waiting on a dead connection, a call on one is retried by
botocore, and a batch held while frozen past the visibility timeout has been shown to other
workers meanwhile, so it is given up, not answered twice (whoever received it again answers).
Time for that is read on CLOCK_BOOTTIME, which counts the time frozen (time.monotonic does not
count a machine's hibernation).

One worker runs per app instance (systemd on AWS, the local launcher in local mode). Stops on
SIGTERM/SIGINT after finishing the batch in hand, and one its last long poll brings (exit 0); a
second signal exits at once.
"""

import argparse
import base64
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import common
from core import cloud, guest, heartbeat, settings, statefiles
from core.gallery import Follower, GalleryStore, NoGallery
from core.messages import CLOCK_MARGIN, DEADLINE, Reply, Request, as_face, deadline, decode, encode, sent_at
from model import files

log = common.EventLog("worker")

AWS_RETRY_SECONDS = 1.0
# The hibernation hooks' protocol (both sides are here: Hibernation, and hook() below).
PAUSE_SIGNAL = signal.SIGUSR1
RESUME_SIGNAL = signal.SIGUSR2
WORKER_STATE = "worker.json"
# How long `--pause` waits for the worker, beyond its long poll: a batch in hand is finished first.
PAUSE_PATIENCE = 30.0


class Resumed(BaseException):
    """Raised by the resume signal's handler in a long poll waiting on a connection that died while
    the machine hibernated: nothing else interrupts a blocked read. Not an Exception, so that no
    library's error handling takes it for its own."""


class Hibernation:
    """The worker's side of the hibernation hooks: what the signals asked, as events."""

    def __init__(self):
        self.pause, self.resumed = threading.Event(), threading.Event()
        self.polling = False
        self.guest = None  # the guest's Reporter (core/guest.py): told of each resume

    def install(self):
        signal.signal(PAUSE_SIGNAL, lambda signum, frame: self.pause.set())
        signal.signal(RESUME_SIGNAL, self._on_resume)

    def _on_resume(self, signum, frame):
        self.pause.clear()
        self.resumed.set()
        if self.polling:
            raise Resumed()


class Worker:
    def __init__(self, config, recognizer, s3, sqs, hibernation=None):
        self.config, self.recognizer, self.s3, self.sqs = config, recognizer, s3, sqs
        self.hibernation = hibernation or Hibernation()
        self.request_url, _ = cloud.queue_urls(sqs, config)
        self.gallery = Follower(GalleryStore(s3, config.gallery_bucket), gallery_of)
        self.follow_gallery()
        self.fetcher = ThreadPoolExecutor(config.batch, thread_name_prefix="fetch")
        self.after_reply = ThreadPoolExecutor(1, thread_name_prefix="after-reply")
        self.switch = heartbeat.Switch(config)  # the dead man's switch: idle, and no autoscaler

    def run(self, stop):
        """Take requests until `stop` is set (False) or the dead man's switch trips (True)."""
        from botocore.exceptions import BotoCoreError, ClientError

        write_worker_state(self.config, paused=False)
        # Polling follows at once (a test that stops a polling worker relies on it).
        log.info("ready", queue=self.config.request_queue, batch=self.config.batch)
        hibernation = self.hibernation
        while not stop.is_set():
            if hibernation.pause.is_set():
                self.sleep(stop)
            if hibernation.resumed.is_set():
                hibernation.resumed.clear()
                self.reconnect()
                self.switch.worked()  # idle from the resume: the autoscaler started it
                if hibernation.guest:
                    hibernation.guest.resumed()
            try:
                hibernation.polling = True
                messages = self.sqs.receive_message(
                    QueueUrl=self.request_url,
                    MaxNumberOfMessages=self.config.batch,
                    WaitTimeSeconds=self.config.poll_wait,
                    MessageSystemAttributeNames=["SentTimestamp"],
                    MessageAttributeNames=[DEADLINE],
                ).get("Messages", [])
                # At once, not only in `finally`: a resume signal from here on must not drop these.
                hibernation.polling = False
                # When their visibility timeout started, as near as can be known: a call frozen
                # mid-poll (or retried) may have begun long before SQS handed these out.
                received = awake_clock()
            except Resumed:
                continue  # the machine hibernated in this poll: reconnected above
            except (BotoCoreError, ClientError) as e:
                log.warning("receive_failed", error=e)
                stop.wait(1)
                continue
            finally:
                hibernation.polling = False
            if not messages:
                if self.switch.due(self.sqs, self.request_url):
                    break
                continue
            # Received while stopping too, they are work in hand: finished before the exit (given back,
            # each return counts as a receive: three instances stopped would dead-letter a request).
            try:
                self.handle(messages, received)
            except Exception:
                # Left on the queue: retried after the visibility timeout, then dead-lettered.
                log.exception("request_failed", messages=len(messages))
            self.switch.worked()  # idle from the end of the work
        self.after_reply.shutdown(wait=True)
        return not stop.is_set()

    def sleep(self, stop):
        """Before the machine hibernates: with the work in hand done, say so and wait to resume."""
        self.after_reply.submit(lambda: None).result()  # the outputs and deletes in hand are done
        write_worker_state(self.config, paused=True)
        log.info("paused", detail="ready to hibernate")
        while self.hibernation.pause.is_set() and not stop.is_set():
            stop.wait(0.1)
        write_worker_state(self.config, paused=False)
        log.info("resumed")

    def reconnect(self):
        """New clients, so new connections: the old ones died while the machine hibernated."""
        self.s3, self.sqs = clients(self.config)
        self.gallery.store = GalleryStore(self.s3, self.config.gallery_bucket)
        log.info("reconnected")

    def follow_gallery(self, wanted=0):
        """The gallery a request of version `wanted` needs (core/gallery.py), and the fingerprint
        said with each answer (the web tier's results table keeps an answer with its model's)."""
        if self.gallery.follow(wanted):
            self.fingerprint = files.fingerprint(self.recognizer.weights_sha256, self.gallery.identity)
            log.info("gallery_loaded", version=self.gallery.version, people=self.gallery.people, model=self.fingerprint[:12])

    def handle(self, messages, received):
        """Answer a batch of requests (`received` at this awake_clock time): one pass through the
        model, one reply call."""
        started = time.monotonic()
        jobs, dropped = to_answer(messages, self.config.request_timeout)
        if dropped:
            self._delete(dropped)
        if not jobs:
            return
        for _, request in jobs:
            log.info("received", id=request.id, stem=request.stem)
        heartbeat = Heartbeat(
            self.sqs, self.request_url, [m["ReceiptHandle"] for m, _ in jobs], self.config.visibility_timeout, received
        )
        with heartbeat:
            replies = self.answer([request for _, request in jobs])
            answered = time.monotonic()
            if heartbeat.lapsed():
                log.warning(
                    "batch_given_up",
                    ids=",".join(r.id for _, r in jobs),
                    detail="frozen past the visibility timeout: whoever received these again answers them",
                )
                return
            send_replies(self.sqs, jobs, replies)
        timing = dict(started=started, answered=answered, sent=time.monotonic())
        # The answers are on their way: the output writes and the deletes need not hold up the next batch.
        self.after_reply.submit(self.finish, jobs, replies, heartbeat, timing)

    def answer(self, requests):
        """A Reply for each request: the name (and every face, where asked), or an error the client can act on."""
        images = list(self.fetcher.map(lambda request: fetch_image(self.s3, self.config.in_bucket, request), requests))
        readable = [index for index, data in enumerate(images) if data is not None]
        self.follow_gallery(max(request.gallery or 0 for request in requests))
        started = time.monotonic()
        every = [bool(requests[i].faces or requests[i].embed) for i in readable]
        found = self.recognizer.identify_batch([images[i] for i in readable], every, self.gallery.gallery)
        outcomes = dict(zip(readable, found))
        model_ms = f"{(time.monotonic() - started) * 1000:.1f}"
        fingerprint = self.fingerprint
        return [reply_of(request, outcomes.get(index), model_ms, fingerprint) for index, request in enumerate(requests)]

    def finish(self, jobs, replies, heartbeat, timing):
        """After the replies are sent: record stem -> name, then delete the requests (the heartbeat
        runs until then). A failure leaves them to be retried: their second answers are ignored."""
        with heartbeat:
            try:
                for (_, request), reply in zip(jobs, replies):
                    if reply.name is not None:
                        self.s3.put_object(Bucket=self.config.out_bucket, Key=request.stem, Body=reply.name.encode())
                self._delete([message for message, _ in jobs])
            except Exception:
                log.exception("finish_failed", ids=",".join(request.id for _, request in jobs))
                return
        log_done(jobs, replies, timing, time.monotonic())

    def _delete(self, messages):
        self._batch("delete_message_batch", messages)

    def _batch(self, call, messages, **extra):
        entries = cloud.receipt_entries((m["ReceiptHandle"] for m in messages), **extra)
        getattr(self.sqs, call)(QueueUrl=self.request_url, Entries=entries)


def to_answer(messages, request_timeout, now=time.time):
    """([(message, Request)] to answer, [message] to acknowledge unanswered): those that are no
    Request, and those whose clients stopped waiting (their web tier gave up on them, or is gone:
    nobody would take the answer, and new uploads would wait behind them). When that is: the
    request's deadline attribute, or, from a web tier that sends none, `request_timeout` after SQS
    took it (SentTimestamp); either with CLOCK_MARGIN for the clocks."""
    jobs, dropped = [], []
    for message in messages:
        try:
            request = decode(Request, message["Body"])
        except ValueError as e:
            log.warning("bad_request", error=e)
            dropped.append(message)
            continue
        sent = sent_at(message)
        until = deadline(message) or (sent + request_timeout if sent is not None else None)
        if until is not None and now() > until + CLOCK_MARGIN:
            waited = round(now() - sent, 1) if sent is not None else None
            log.info("expired", id=request.id, stem=request.stem, waited_s=waited)
            dropped.append(message)
            continue
        jobs.append((message, request))
    return jobs, dropped


def reply_of(request, outcome, model_ms, fingerprint):
    """The Reply to `request` for the model's `outcome` on its image: its faces (model.Face, largest
    first), a ModelError, or None when the image was gone from the input bucket."""
    if outcome is None:
        return Reply(request.id, request.stem, error="the image is no longer in the input bucket")
    if isinstance(outcome, Exception):
        return Reply(request.id, request.stem, error=str(outcome), model_ms=model_ms)
    if request.embed:
        if len(outcome) != 1:
            return Reply(request.id, request.stem, error=f"an example shows one face: {len(outcome)} found", model_ms=model_ms)
        embedding = base64.b64encode(outcome[0].embedding_bytes()).decode()
        return Reply(request.id, request.stem, embedding=embedding, model_ms=model_ms, model=fingerprint)
    largest = outcome[0]
    faces = [as_face(face.box, face.probability, face.name, face.distance) for face in outcome] if request.faces else None
    return Reply(
        request.id, request.stem, name=largest.name, distance=largest.distance, faces=faces, model_ms=model_ms, model=fingerprint
    )


def gallery_of(names, embeddings):
    from model import Gallery

    return Gallery.from_rows(names, embeddings)


def fetch_image(s3, bucket, request):
    """The image bytes of a request, or None when they are gone from the input bucket."""
    from botocore.exceptions import ClientError

    try:
        return s3.get_object(Bucket=bucket, Key=request.key)["Body"].read()
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
            raise
        return None


def send_replies(sqs, jobs, replies):
    """Each reply on the queue its request names, in batches."""
    by_queue = {}
    for (_, request), reply in zip(jobs, replies):
        by_queue.setdefault(request.reply_to, []).append(reply)
    for queue_url, batch in by_queue.items():
        entries = [{"Id": str(i), "MessageBody": encode(reply)} for i, reply in enumerate(batch)]
        failed = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed", [])
        if failed:
            raise RuntimeError(f"{len(failed)} replies not sent: {failed[0].get('Message')}")


def log_done(jobs, replies, timing, done):
    """One line per request answered, with where its time went."""
    for (_, request), reply in zip(jobs, replies):
        log.info(
            "done",
            id=request.id,
            stem=request.stem,
            result=reply.name,
            error=reply.error,
            batch=len(jobs),
            ms=round((done - timing["started"]) * 1000),
            model_ms=reply.model_ms,
            before_model_ms=round((timing["answered"] - timing["started"]) * 1000 - float(reply.model_ms or 0), 1),
            reply_ms=round((timing["sent"] - timing["answered"]) * 1000, 1),
            after_reply_ms=round((done - timing["sent"]) * 1000, 1),
        )


def awake_clock():
    """Seconds on a clock that goes on while the process is frozen or the machine hibernates."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class Heartbeat:
    """Keeps messages invisible while their job runs, so the queue's visibility timeout can be
    short: the messages of a worker that died reappear soon, those of a slow job never do.

    `hidden_at`: when their visibility timeout last started (the receive), on awake_clock. Once
    that is more than `timeout` ago (the process was frozen, or extending failed), the messages may
    have been shown to another worker: `lapsed()`, and the heartbeat stops extending them."""

    def __init__(self, sqs, queue_url, receipts, timeout, hidden_at):
        self.sqs = sqs
        self.queue_url = queue_url
        self.entries = cloud.receipt_entries(receipts, VisibilityTimeout=timeout)
        self.timeout = timeout
        self.every = timeout / 2
        self.hidden_at = hidden_at
        self.lost = False

    def lapsed(self):
        self.lost = self.lost or awake_clock() - self.hidden_at > self.timeout
        return self.lost

    def __enter__(self):
        # A fresh thread each time: a job holds its messages through two stages.
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()

    def _beat(self):
        from botocore.exceptions import BotoCoreError, ClientError

        while not self.done.wait(self.every) and not self.lapsed():
            try:
                extending = awake_clock()
                self.sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=self.entries)
                self.hidden_at = extending
            except (BotoCoreError, ClientError) as e:
                log.warning("heartbeat_failed", error=e)


def load_recognizer(config):
    """The model, loaded once per process (or once per fork server, in local mode); its gallery comes
    from the gallery bucket (Worker.load_gallery)."""
    settings.require_file(config.weights, "set FR_WEIGHTS, or run ./setup.sh local to make stand-in weights")
    from model import Recognizer

    started = time.monotonic()
    recognizer = Recognizer(config.weights, threads=config.torch_threads)
    seconds = round(time.monotonic() - started, 2)
    log.info("model_loaded", seconds=seconds, stand_in=recognizer.stand_in, weights=recognizer.weights_sha256[:12])
    return recognizer


def clients(config):
    """The worker's AWS clients: (S3, SQS)."""
    return cloud.client(config, "s3"), cloud.client(config, "sqs")


def serve(config, recognizer, stop, hibernation=None):
    """Take requests until `stop` is set (the clients are made here: after a fork, never before).

    AWS may not be reachable yet (the unit starts before the network is up, so that the model loads
    meanwhile), nor the instance's credentials (botocore looks them up once, when a client is made,
    and a client made without them never has any): clients are made again, and the queues looked up,
    every AWS_RETRY_SECONDS until they answer. `hibernation`: the hooks' handlers, installed
    already (else here). True when the dead man's switch tripped: the machine is to power off."""
    from botocore.exceptions import BotoCoreError, ClientError

    if hibernation is None:
        hibernation = Hibernation()
        hibernation.install()
    hibernation.guest = guest.Reporter(config, stop)
    hibernation.guest.booted()  # the model is loaded: ready once the agent's boot work is done
    while not stop.is_set():
        try:
            s3, sqs = clients(config)
            worker = Worker(config, recognizer, s3, sqs, hibernation)
        except (BotoCoreError, ClientError, NoGallery) as e:
            log.warning("aws_unreachable" if not isinstance(e, NoGallery) else "no_gallery", error=e, retry_in=AWS_RETRY_SECONDS)
            stop.wait(AWS_RETRY_SECONDS)
            continue
        if worker.run(stop):
            return True
    log.info("stopped")
    return False


def boot_id():
    """This boot of the machine (a hibernation keeps it; a reboot, or a stop and start, does not)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def write_worker_state(config, paused):
    """Tell the hooks which process is the worker, on which boot, and whether it is paused."""
    statefiles.write_state(config, WORKER_STATE, pid=os.getpid(), boot=boot_id(), paused=paused)


def read_worker_state(config):
    """What the worker of this boot said (write_worker_state), or None: FR_STATE_DIR outlives a
    reboot, and a file left by the worker of an earlier boot names a pid that is now another
    process's."""
    state = statefiles.read_state(config, WORKER_STATE)
    return state if state and state.get("boot") == boot_id() else None


def paused(config):
    """Whether the worker of FR_STATE_DIR has said it is ready to hibernate."""
    state = read_worker_state(config)
    return bool(state and state["paused"])


def hook(config, action):
    """`--pause`: ask the worker to finish its work in hand and take no more, and wait until it
    has (at most its long poll plus PAUSE_PATIENCE: hibernation goes ahead regardless);
    `--resume`: let it go on. Exit status 0 either way: a hook must not stop the machine's sleep."""
    state = read_worker_state(config)
    if not state:
        log.warning("hook_without_worker", action=action)
        return 0
    try:
        os.kill(state["pid"], PAUSE_SIGNAL if action == "pause" else RESUME_SIGNAL)
    except ProcessLookupError:
        log.warning("hook_worker_gone", action=action, pid=state["pid"])
        return 0
    deadline = time.monotonic() + config.poll_wait + PAUSE_PATIENCE
    pause = threading.Event()
    if action == "pause":
        while not paused(config) and time.monotonic() < deadline:
            pause.wait(0.1)
        log.info("hook", action="pause", pid=state["pid"], paused=paused(config))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description="The app-tier worker (and its hibernation hooks).")
    hooks = parser.add_mutually_exclusive_group()
    for action, what in (
        ("pause", "before hibernation: have the running worker finish and wait"),
        ("resume", "after hibernation: let the running worker go on"),
    ):
        hooks.add_argument(f"--{action}", action="store_const", const=action, dest="hook", help=what)
    args = parser.parse_args(argv)
    config = settings.load_config_or_exit()
    common.setup_logging(config.log_level)
    if args.hook:
        return hook(config, args.hook)
    stop = threading.Event()
    common.stop_on_signals(stop)
    # Before the model loads (seconds): a hook's signal meanwhile is taken, not the default action
    # (which ends the process), and the hooks find this process, not the worker of an earlier run.
    hibernation = Hibernation()
    hibernation.install()
    write_worker_state(config, paused=False)
    log.info("starting", pid=os.getpid())
    return heartbeat.POWER_OFF_EXIT if serve(config, load_recognizer(config), stop, hibernation) else 0


if __name__ == "__main__":
    sys.exit(main())
