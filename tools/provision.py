"""Create the service's AWS resources, idempotently: buckets, queues, the app-tier pool.

Used by the local stack and the tests against moto; the same calls work against AWS.

    python tools/provision.py        (FR_* configuration as for the services)
"""
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import autoscaler  # noqa: E402
import common  # noqa: E402

log = logging.getLogger("provision")

# A job takes well under a second; a crashed worker's message reappears after this long.
VISIBILITY_TIMEOUT = 30
# Receives before a message that keeps failing is moved to the dead-letter queue.
MAX_RECEIVES = 3


def ensure_bucket(s3, config, name):
    try:
        s3.head_bucket(Bucket=name)
    except s3.exceptions.ClientError:
        location = {} if config.region == "us-east-1" else {
            "CreateBucketConfiguration": {"LocationConstraint": config.region}
        }
        s3.create_bucket(Bucket=name, **location)
        log.info("event=created bucket=%s", name)
    s3.put_public_access_block(
        Bucket=name,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True,
            "BlockPublicPolicy": True, "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_encryption(
        Bucket=name,
        ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
    )


def ensure_queue(sqs, name, attributes):
    """The queue's URL, created if missing, with `attributes` set either way."""
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return url


def provision(config, s3, sqs, ec2):
    for bucket in (config.in_bucket, config.out_bucket):
        ensure_bucket(s3, config, bucket)
    size = str(common.MAX_MESSAGE_BYTES)
    dlq_url = ensure_queue(sqs, config.dead_letter_queue, {"MaximumMessageSize": size, "MessageRetentionPeriod": "1209600"})
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    ensure_queue(sqs, config.req_queue, {
        "MaximumMessageSize": size,
        "VisibilityTimeout": str(VISIBILITY_TIMEOUT),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVES)}),
    })
    ensure_queue(sqs, config.resp_queue, {"MaximumMessageSize": size})
    autoscaler.repair_pool(ec2, config, autoscaler.describe_pool(ec2, config))
    log.info("event=provisioned prefix=%s pool=%d", config.prefix, config.max_instances)


def main():
    config = common.load_config_or_exit()
    common.setup_logging(config.log_level)
    provision(config, common.client(config, "s3"), common.client(config, "sqs"), common.client(config, "ec2"))


if __name__ == "__main__":
    main()
