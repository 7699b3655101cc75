"""A web tier's first act: the requests an earlier web tier left in the request queue are removed.

There is one web tier per queue (README, limits), and a web tier that starts waits on nothing, so
every request sent before it started is one nobody waits for: a crashed (or killed) web tier's.
Left there, they would be worked on (the model's time, for nobody) ahead of the new web tier's
uploads until their deadline passed. So, in a thread of its own, it receives what the queue holds
and deletes what was sent before it started (SentTimestamp, with CLOCK_MARGIN for the clocks),
handing anything newer straight back (visibility 0: its own uploads, one receive more each), until
a receive finds no such request. Requests a worker holds are not seen: their worker answers them
(nobody takes the answer) or, stopped, lets them come back, to be dropped by their deadline.
"""

import common
from core import cloud
from core.messages import CLOCK_MARGIN, sent_at

log = common.EventLog("web")

# A long poll asks every SQS server (a short one only some): an empty answer means none is left.
SWEEP_WAIT = 1


def sweep(sqs, request_url, started, stop):
    """Delete the requests sent to `request_url` before `started` (epoch seconds), until a receive
    returns none of them or `stop` is set; how many were deleted."""
    from botocore.exceptions import BotoCoreError, ClientError

    deleted = 0
    failures = common.Failures(log, "orphan_sweep_failed")
    while not stop.is_set():
        try:
            messages = sqs.receive_message(
                QueueUrl=request_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=SWEEP_WAIT,
                MessageSystemAttributeNames=["SentTimestamp"],
            ).get("Messages", [])
            # A message SQS does not date is kept: never taken for old.
            old = [m for m in messages if (sent_at(m) or started) < started - CLOCK_MARGIN]
            new = [m for m in messages if m not in old]
            if new:
                entries = cloud.receipt_entries((m["ReceiptHandle"] for m in new), VisibilityTimeout=0)
                sqs.change_message_visibility_batch(QueueUrl=request_url, Entries=entries)
            if old:
                sqs.delete_message_batch(QueueUrl=request_url, Entries=cloud.receipt_entries(m["ReceiptHandle"] for m in old))
        except (BotoCoreError, ClientError) as e:
            failures.failed(e)
            stop.wait(1)
            continue
        deleted += len(old)
        if not old:
            break
    if deleted:
        log.info("orphans_deleted", count=deleted, detail="requests sent before this web tier started: nobody waits for them")
    return deleted
