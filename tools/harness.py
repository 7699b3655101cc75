"""Driving the stack from a script (the tests and the benchmark): the fixtures and stand-in model
files, the environment of a child service, AWS clients for the local moto, and waiting on a
condition with a deadline instead of sleeping."""

import json
import os
import sys
import threading
import time

from core import settings
from tools.loadgen import FIXTURES, read_expected, request

IMAGES = FIXTURES / "face_images_100"
LABELS = FIXTURES / "face_images_100.csv"
# Where the service looks for its model files by default (FR_WEIGHTS, FR_GALLERY): the stand-in ones.
STAND_IN = settings.Config()
PYTHON = sys.executable
# Processes started here never see real credentials.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_SESSION_TOKEN": "test"}


def expected_answers():
    """{stem: name} from the fixtures' CSV."""
    return read_expected(LABELS)


def stand_in_files():
    """(weights, gallery): the stand-in model files, made once into var/stand-in (by model's
    make_stand_in; torch, seconds to import, is imported only to make them)."""
    weights, gallery = STAND_IN.weights, STAND_IN.gallery
    if weights.exists() and gallery.exists():
        return weights, gallery
    from model import make_stand_in

    return make_stand_in(weights.parent, IMAGES, LABELS)


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    """Poll `predicate` until it returns a true value (returned), or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        pause.wait(interval)


def child_env(**fr):
    """The environment for a child service: ours only, plus PATH and the given FR_* values."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FR_", "AWS_"))}
    env.update(CREDENTIALS)
    env.update({k: str(v) for k, v in fr.items()})
    return env


def aws(endpoint, service, region="us-east-1"):
    import boto3

    return boto3.client(
        service, region_name=region, endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test"
    )


def new_queue(sqs, name, **arguments):
    """CreateQueue, then its URL once the queue answers (a new queue is not usable for its first
    second: CreateQueue reference, and the AWS-like stack)."""
    from botocore.exceptions import ClientError

    url = sqs.create_queue(QueueName=name, **arguments)["QueueUrl"]

    def usable():
        try:
            return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        except ClientError as e:
            if not e.response["Error"]["Code"].endswith("NonExistentQueue"):
                raise
            return None

    wait_until(usable, 10, what=f"queue {name} usable")
    return url


def running_instances(ec2):
    """How many app-tier instances moto shows running, asked the way anyone can ask it."""
    reservations = ec2.describe_instances(
        Filters=[
            {"Name": "tag:Name", "Values": ["app-tier-instance-*"]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )["Reservations"]
    return sum(len(r["Instances"]) for r in reservations)


def table_hits(url):
    """How many uploads the web tier at `url` answered from the results table (its /status)."""
    return json.loads(request(url + "status?format=json", "GET")[1])["web"]["table_hits"]
