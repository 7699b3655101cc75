"""AWS clients, and the calls every process makes the same way: a client per process, retries of
the refusals AWS documents as eventual consistency, queue URLs and depths, emptying a bucket, batch
entries."""

import threading
import time


def client(config, service, max_connections=10, attempts=3, connect_timeout=5, read_timeout=None, session=None):
    """A boto3 client for `service` (thread-safe: make one per process and share it). Its calls
    are tried `attempts` times; `read_timeout` defaults to what a long poll needs. `session`: a
    boto3 Session, for a client made in a thread of its own (boto3's default one is not for threads;
    a fresh one costs 70-210 ms to load its models, so the default serves everything else)."""
    import boto3
    from botocore.config import Config as BotoConfig

    return (session or boto3).client(
        service,
        region_name=config.region,
        endpoint_url=config.endpoint_url,
        config=BotoConfig(
            retries={"mode": "standard", "max_attempts": attempts},
            connect_timeout=connect_timeout,
            # Long polls hold the connection for poll_wait seconds.
            read_timeout=config.poll_wait + 10 if read_timeout is None else read_timeout,
            max_pool_connections=max_connections,
        ),
    )


def while_refused(call, passing, patience, on_retry=None):
    """call(), made again with backoff (0.1 s doubling to 10 s) for up to `patience` seconds while AWS
    refuses it with a ClientError that `passing(error)` says will pass: the refusals AWS documents
    as eventual consistency (a new instance profile, a queue name just deleted, ...). botocore's
    own retries are for transient faults and do not cover these. `on_retry(error, pause)` is told."""
    from botocore.exceptions import ClientError

    deadline = time.monotonic() + patience
    pause = 0.1
    while True:
        try:
            return call()
        except ClientError as e:
            if not passing(e) or time.monotonic() + pause > deadline:
                raise
            if on_retry:
                on_retry(e, pause)
            threading.Event().wait(pause)
            pause = min(pause * 2, 10.0)


def error_code(error):
    """The AWS error code of a botocore ClientError."""
    return error.response.get("Error", {}).get("Code", "")


def queue_urls(sqs, config):
    """(request queue URL, response queue URL); they are created by provisioning, not here."""
    return (
        sqs.get_queue_url(QueueName=config.request_queue)["QueueUrl"],
        sqs.get_queue_url(QueueName=config.response_queue)["QueueUrl"],
    )


def queue_depth(sqs, queue_url):
    """(visible, in flight) messages of a queue."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def empty_bucket(s3, bucket):
    """Delete every object of `bucket`, a page (up to 1000) per call."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})


def receipt_entries(receipts, **extra):
    """Entries of an SQS *Batch call (delete, change visibility) for these receipt handles."""
    return [dict(Id=str(i), ReceiptHandle=receipt, **extra) for i, receipt in enumerate(receipts)]
