"""Reply correlation: how an answer finds the request that waits for it. The web tier's side of
the request/reply protocol; the messages are Request and Reply, the worker's side
is worker.py.

A request thread registers a slot under its own request id (a uuid, never a file name) *before*
it sends the request, and the slot is removed when the thread leaves, answered or not:

    with replies.waiting(request_id) as slot:
        send the request
        slot.event.wait(timeout)   # then slot.outcome is a Reply, or DeadLettered

One poller thread long-polls the response queue and delivers each Reply to its slot, then deletes
the batch; a reply nobody waits for (its request timed out, was answered already: SQS may deliver
a message twice; or this tier restarted) is logged and deleted. Another poller watches the
dead-letter queue: a request the workers failed on repeatedly is delivered as DeadLettered (the
client gets a 502 at once, not a timeout) and the message is kept for the operator, hidden for as
long as SQS allows (12 hours from each receive), and only logged again when it comes back. A third
thread keeps FR_STATE_DIR/web.json saying how many requests wait: the autoscaler's exact count of
the work (autoscaler.py).
"""

import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass

import common
from core import cloud, statefiles
from core.messages import Reply, Request, decode

log = common.EventLog("web")

# SQS hides a received message for at most 12 hours from the receive (ChangeMessageVisibility
# reference: a longer total is refused), so a dead letter is hidden for that less a margin, which
# covers the time from SQS handing it out to our call (at most a long poll of 20 s), and is read
# again twice a day.
DEAD_LETTER_HIDE = 12 * 60 * 60 - 60
# A request counts as queued longer than SQS's counts lag this much after the lag: the counts SQS
# gives are of a moment at least the lag ago (GetQueueAttributes reference: "at least 1 minute"),
# which may be a moment older still (the AWS-like stack's samples are 0.1 s apart).
LONG_QUEUED_MARGIN = 1.0
# Dead letters seen, remembered (by SQS message id) so that each is reported as an error once.
REMEMBERED_DEAD_LETTERS = 10_000


@dataclass(frozen=True)
class DeadLettered:
    """The outcome of a request the workers failed on repeatedly (SQS moved it to the dead-letter queue)."""

    id: str


class Slot:
    """Where the pollers leave the outcome for one waiting request: a Reply, or DeadLettered."""

    def __init__(self):
        self.event = threading.Event()
        self.outcome = None
        self.queued = None  # when its request's message was on the queue (time.monotonic())


class Pending:
    """Requests waiting for their outcome, by request id."""

    def __init__(self):
        self._lock = threading.Lock()
        self._slots = {}
        self.changed = threading.Event()  # set when a request starts or stops waiting

    def register(self, request_id):
        slot = Slot()
        with self._lock:
            self._slots[request_id] = slot
        self.changed.set()
        return slot

    def remove(self, request_id):
        with self._lock:
            self._slots.pop(request_id, None)
        self.changed.set()

    def deliver(self, request_id, outcome):
        """Wake the request waiting for `request_id`; False if none is (gone, or answered already:
        SQS may deliver a message twice)."""
        with self._lock:
            slot = self._slots.get(request_id)
            if slot is None or slot.outcome is not None:
                return False
            slot.outcome = outcome
        slot.event.set()
        return True

    def __len__(self):
        with self._lock:
            return len(self._slots)

    def counts(self, moment):
        """(requests waiting, how many of them had their messages on the queue before `moment`), of
        one moment."""
        with self._lock:
            return len(self._slots), sum(1 for slot in self._slots.values() if slot.queued is not None and slot.queued < moment)


class Replies:
    """The waiting requests of this web tier and the threads that answer them."""

    def __init__(self, config, sqs, reply_url, dead_letter_url):
        self.config = config
        self.sqs = sqs
        self.reply_url = reply_url
        self.dead_letter_url = dead_letter_url
        self.pending = Pending()
        self.dead_letters_seen = OrderedDict()

    @contextmanager
    def waiting(self, request_id):
        """A Slot registered for `request_id` while the block runs: enter it before sending the request."""
        slot = self.pending.register(request_id)
        try:
            yield slot
        finally:
            self.pending.remove(request_id)

    def __len__(self):
        return len(self.pending)

    def threads(self, stop):
        """The pollers and the web.json writer, as threads (not started) that end once `stop` is set."""
        return [
            threading.Thread(target=run, args=(stop,), name=run.__name__, daemon=True)
            for run in (self.poll_replies, self.poll_dead_letters, self.publish_waiting)
        ]

    def publish_waiting(self, stop):
        """Keep FR_STATE_DIR/web.json saying how many requests wait for an answer, for the
        autoscaler on this host (its exact count of the work), and how many of them were queued
        longer than FR_SQS_COUNT_LAG ago (SQS's counts show those, unless their messages are gone):
        from the start, at once when the count changes, and at least every
        statefiles.WEB_STATE_SECONDS, so that a file gone stale means this tier is gone."""
        failures = common.Failures(log, "state_write_failed")
        while not stop.is_set():
            self.pending.changed.clear()  # before the count is read: a change after it is written again
            waiting, long_queued = self.pending.counts(time.monotonic() - self.config.sqs_count_lag - LONG_QUEUED_MARGIN)
            try:
                statefiles.write_waiting(self.config, waiting, long_queued)
                failures.recovered()
            except OSError as e:
                failures.failed(e)
                stop.wait(statefiles.WEB_STATE_SECONDS)
            self.pending.changed.wait(statefiles.WEB_STATE_SECONDS)

    def poll_replies(self, stop):
        """Hand each reply on the response queue to its waiting request, until `stop` is set."""
        self._poll(self.reply_url, self._take_replies, stop)

    def poll_dead_letters(self, stop):
        """Fail the waiting request of each request that workers gave up on, until `stop` is set."""
        self._poll(self.dead_letter_url, self._take_dead_letters, stop)

    def _poll(self, url, take, stop):
        from botocore.exceptions import BotoCoreError, ClientError

        while not stop.is_set():
            try:
                messages = self.sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=self.config.poll_wait
                ).get("Messages", [])
                if messages:
                    take(messages)
            except (BotoCoreError, ClientError) as e:
                log.warning("poll_failed", queue=url.rsplit("/", 1)[-1], error=e)
                stop.wait(1)

    def _take_replies(self, messages):
        for message in messages:
            try:
                reply = decode(Reply, message["Body"])
            except ValueError as e:
                log.warning("bad_reply", error=e)
                continue
            if not self.pending.deliver(reply.id, reply):
                # Its request timed out, was answered already, or this web tier restarted.
                log.info("unclaimed_reply", id=reply.id)
        # After delivery: the waiting clients need not wait for the delete.
        self.sqs.delete_message_batch(
            QueueUrl=self.reply_url, Entries=cloud.receipt_entries(m["ReceiptHandle"] for m in messages)
        )

    def _take_dead_letters(self, messages):
        """Tell each waiting client its request was dead-lettered, once; keep the messages, hidden."""
        for message in messages:
            try:
                request = decode(Request, message["Body"])
            except ValueError:
                request = None
            if self._seen_before(message["MessageId"]):
                log.info("dead_letter_again", id=request.id if request else "?")
            elif request is None:
                log.error("dead_letter", id="?", detail="not a request: kept for the operator")
            else:
                claimed = self.pending.deliver(request.id, DeadLettered(request.id))
                log.error("dead_letter", id=request.id, stem=request.stem, client_told=claimed)
        result = self.sqs.change_message_visibility_batch(
            QueueUrl=self.dead_letter_url,
            Entries=cloud.receipt_entries((m["ReceiptHandle"] for m in messages), VisibilityTimeout=DEAD_LETTER_HIDE),
        )
        for failed in result.get("Failed", []):
            log.warning("dead_letter_not_hidden", code=failed.get("Code"), detail=failed.get("Message"))
        log.info("dead_letters_hidden", count=len(result.get("Successful", [])), seconds=DEAD_LETTER_HIDE)

    def _seen_before(self, message_id):
        """Whether this dead letter was reported before (then it is remembered afresh)."""
        seen = message_id in self.dead_letters_seen
        self.dead_letters_seen[message_id] = True
        self.dead_letters_seen.move_to_end(message_id)
        while len(self.dead_letters_seen) > REMEMBERED_DEAD_LETTERS:
            self.dead_letters_seen.popitem(last=False)
        return seen
