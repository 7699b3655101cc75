"""SQS as the AWS-like stack has it: lagged counts, reused names, young queues, visibility."""

import json
import math
import threading
import time
from collections import deque

from simulation.awslike.sim import LAGGED_COUNTS


def install_sqs(sim):
    """SQS's counts lagging, queue names not reusable at once, the 12-hour visibility cap counted
    from the receive, a message's attributes counted toward the queue's size limit."""
    from moto.core.utils import unix_time_millis
    from moto.sqs.exceptions import InvalidParameterValue, ReceiptHandleIsInvalid, SQSException
    from moto.sqs.models import MAXIMUM_VISIBILITY_TIMEOUT, Message, Queue, SQSBackend

    queue_constructor, queue_creator, queue_deleter = Queue.__init__, SQSBackend.create_queue, SQSBackend.delete_queue
    message_received = Message.mark_received
    message_sender = SQSBackend.send_message

    def send_message(self, queue_name, message_body, message_attributes=None, *args, **kwargs):
        # SendMessage reference: the body's bytes and each attribute's name, type and value count
        # toward MaximumMessageSize; moto counts the body's characters alone. (SendMessageBatch
        # sends each entry through here.)
        size = len(message_body.encode()) + sum(
            len(name.encode())
            + sum(len(v.encode() if isinstance(v, str) else v) for v in value.values() if isinstance(v, (str, bytes)))
            for name, value in (message_attributes or {}).items()
        )
        limit = self.get_queue(queue_name).maximum_message_size
        if size > limit:
            reason = f"Message must be shorter than {limit} bytes (body and attributes: {size})"
            raise InvalidParameterValue(f"One or more parameters are invalid. Reason: {reason}.")
        return message_sender(self, queue_name, message_body, message_attributes, *args, **kwargs)

    def queue_init(self, *args, **kwargs):
        queue_constructor(self, *args, **kwargs)
        self.sim_history = deque()
        sim.queues.add(self)

    def create_queue(self, name, *args, **kwargs):
        deleted = sim.queues_deleted.get((self.account_id, self.region_name, name))
        if name not in self.queues and deleted and time.monotonic() - deleted < sim.t["queue_name_reuse"]:
            raise SQSException(
                "QueueDeletedRecently",
                "You must wait 60 seconds after deleting a queue before you can create another queue with the same name.",
            )
        return queue_creator(self, name, *args, **kwargs)

    def delete_queue(self, queue_name):
        queue_deleter(self, queue_name)
        sim.queues_deleted[(self.account_id, self.region_name, queue_name)] = time.monotonic()

    def mark_received(self, *args, **kwargs):
        message_received(self, *args, **kwargs)
        self.sim_received_ms = unix_time_millis()

    def change_message_visibility(self, queue_name, receipt_handle, visibility_timeout):
        """moto's, with the 12-hour cap counted from the last receive, as AWS counts it."""
        queue = self.get_queue(queue_name)
        for message in queue._messages:
            if message.had_receipt_handle(receipt_handle):
                received = getattr(message, "sim_received_ms", message.sent_timestamp)
                if unix_time_millis() + int(visibility_timeout) * 1000 - received > MAXIMUM_VISIBILITY_TIMEOUT * 1000:
                    raise SQSException(
                        "InvalidParameterValue",
                        f"Value {visibility_timeout} for parameter VisibilityTimeout is invalid. Reason: "
                        f"Total VisibilityTimeout for the message is beyond the limit "
                        f"[{MAXIMUM_VISIBILITY_TIMEOUT} seconds]",
                    )
                message.change_visibility(visibility_timeout)
                if message.visible and message in queue.pending_messages:
                    queue.pending_messages.remove(message)
                return
        raise ReceiptHandleIsInvalid

    Queue.__init__ = queue_init
    SQSBackend.create_queue = create_queue
    SQSBackend.delete_queue = delete_queue
    Message.mark_received = mark_received
    SQSBackend.send_message = send_message
    SQSBackend.change_message_visibility = change_message_visibility
    for index, name in enumerate(LAGGED_COUNTS, start=1):
        sim.true_counts.append(getattr(Queue, name))
        setattr(Queue, name, property(lambda queue, index=index: sim.lagged(queue, index)))
    threading.Thread(target=sim.sample_queues, args=(threading.Event(),), name="sqs-lag", daemon=True).start()


def install_new_queues(sim):
    """A new queue unusable for its first `queue_ready` seconds (but to GetQueueUrl), also as a
    dead-letter target."""
    from moto.sqs.exceptions import QueueDoesNotExist, SQSException
    from moto.sqs.models import Queue, SQSBackend

    queue_constructor, queue_getter, url_getter = Queue.__init__, SQSBackend.get_queue, SQSBackend.get_queue_url
    dlq_setup = Queue._setup_dlq

    def queue_init(self, *args, **kwargs):
        self.sim_created = time.monotonic()
        queue_constructor(self, *args, **kwargs)

    def young(queue):
        return time.monotonic() - getattr(queue, "sim_created", -math.inf) < sim.t["queue_ready"]

    def get_queue(self, queue_name):
        queue = queue_getter(self, queue_name)
        if young(queue) and not getattr(sim.request, "queue_url", False):
            sim.record(
                "UseQueue", [], refused=f"{queue_name} created {time.monotonic() - queue.sim_created:.2f} s ago", queue=queue_name
            )
            raise QueueDoesNotExist()
        return queue

    def get_queue_url(self, queue_name):
        sim.request.queue_url = True
        try:
            return url_getter(self, queue_name)
        finally:
            sim.request.queue_url = False

    def setup_dlq(self, policy):
        before = (getattr(self, "redrive_policy", None), getattr(self, "dead_letter_queue", None))
        dlq_setup(self, policy)
        target = self.dead_letter_queue
        if target is not None and young(target):
            self.redrive_policy, self.dead_letter_queue = before  # refused: nothing changes
            sim.record("UseQueue", [], refused=f"dead-letter target {target.name} just created", queue=self.name)
            raise SQSException(
                "InvalidParameterValue",
                f"Value {json.dumps(policy) if isinstance(policy, dict) else policy} "
                "for parameter RedrivePolicy is invalid. Reason: Dead-letter target does not exist.",
            )

    Queue.__init__ = queue_init
    Queue._setup_dlq = setup_dlq
    SQSBackend.get_queue = get_queue
    SQSBackend.get_queue_url = get_queue_url
