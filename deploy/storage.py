"""The deployment's storage and messaging: private, encrypted buckets; the gallery seeded in its
bucket; the request queue (1 KB messages, redrive to a dead-letter queue) and the response queue;
the results table."""

import json
import threading
import time

from core import cloud, settings
from core.gallery import GalleryStore
from core.messages import MAX_MESSAGE_BYTES, MAX_REPLY_BYTES
from deploy.base import MAX_RECEIVES, ProvisionError, refused_with
from model.files import GalleryFileError, read_gallery

QUEUE_REUSE_PATIENCE = 90
# A new queue is usable a second after it is made (CreateQueue reference).
QUEUE_READY_PATIENCE = 30
# S3: a bucket name just deleted is refused (OperationAborted) while the deletion propagates; AWS
# gives no bound ("try again"): minutes at most, by reports.
BUCKET_REUSE_PATIENCE = 600
# DynamoDB: a table is CREATING, or DELETING, for seconds (AWS documents no bound).
TABLE_PATIENCE = 300
TABLE_KEY = {"AttributeName": "stem", "KeyType": "HASH"}


class StorageSteps:
    """Provisioner's steps for buckets, queues and the results table."""

    def ensure_bucket(self, name):
        from botocore.exceptions import ClientError

        taken = ProvisionError(
            f"config error: bucket {name} belongs to another AWS account (bucket names are global): choose another FR_PREFIX"
        )
        try:
            self.s3.head_bucket(Bucket=name)
            state = "exists"
        except ClientError as e:
            # HeadBucket has no body: its status is all S3 says (404 missing, 403 someone else's).
            if cloud.error_code(e) == "403":
                raise taken from None
            if cloud.error_code(e) not in ("404", "NoSuchBucket"):
                raise
            location = (
                {}
                if self.config.region == "us-east-1"
                else {"CreateBucketConfiguration": {"LocationConstraint": self.config.region}}
            )
            try:
                # A name deleted moments ago (a provision right after a teardown) is refused for a while.
                cloud.while_refused(
                    lambda: self.s3.create_bucket(Bucket=name, **location),
                    refused_with("OperationAborted"),
                    BUCKET_REUSE_PATIENCE,
                    self.waiting,
                )
            except ClientError as e:
                if cloud.error_code(e) != "BucketAlreadyExists":
                    raise
                raise taken from None
            state = "created"
        self.s3.put_public_access_block(
            Bucket=name,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
        self.s3.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
        )
        if name == self.config.in_bucket:
            self.s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration=upload_lifecycle(self.config))
        return state

    def ensure_queue(self, name, attributes):
        """Created if missing, `attributes` set either way; done once the queue answers."""
        try:
            url = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
            self.sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
            state = "exists"
        except self.sqs.exceptions.QueueDoesNotExist:
            # Made with its attributes: a new queue is not usable for its first second (CreateQueue
            # reference). A name deleted less than 60 s ago cannot be used again yet (a provision
            # right after a teardown).
            url = cloud.while_refused(
                lambda: self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"],
                refused_with("QueueDeletedRecently"),
                QUEUE_REUSE_PATIENCE,
                self.waiting,
            )
            state = "created"
        # Asked until the queue answers: the queue that names it as its dead-letter target needs it usable.
        cloud.while_refused(
            lambda: self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]),
            refused_with("NonExistentQueue"),
            QUEUE_READY_PATIENCE,
            self.waiting,
        )
        return state

    def seed_gallery(self):
        """The gallery's first version from FR_GALLERY, unless the gallery bucket has one (the
        people added since are kept: a provision never undoes them)."""
        try:
            names, embeddings = read_gallery(self.config.gallery)
        except (OSError, GalleryFileError) as e:
            raise ProvisionError(f"config error: FR_GALLERY: {e}") from None
        return GalleryStore(self.s3, self.config.gallery_bucket).seed(names, embeddings)

    def queue_attributes(self, name):
        """Each queue's attributes (1 KB requests, 8 KB replies; the request queue's visibility timeout and its
        redrive to the dead-letter queue)."""
        config, size = self.config, str(MAX_MESSAGE_BYTES)
        if name == config.dead_letter_queue:
            return {"MaximumMessageSize": size, "MessageRetentionPeriod": "1209600"}
        if name == config.response_queue:
            return {"MaximumMessageSize": str(MAX_REPLY_BYTES)}
        dead_letters = f"arn:aws:sqs:{config.region}:{self.account()}:{config.dead_letter_queue}"
        return {
            "MaximumMessageSize": size,
            "VisibilityTimeout": str(config.visibility_timeout),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dead_letters, "maxReceiveCount": str(MAX_RECEIVES)}),
        }

    def ensure_table(self):
        """The results table, with FR_RESULTS_TABLE=1: on-demand (paid per request, nothing while
        idle), keyed by stem, and ACTIVE: DynamoDB makes a table in the background and refuses its
        items until then. One still being deleted (a provision right after a teardown) is waited
        out first: its name cannot be used again until it is gone."""
        config, name = self.config, self.config.results_table_name
        table = self._table(name)
        if table and table["TableStatus"] == "DELETING":
            self._wait_table(name, None)
            table = None
        if table is None:
            self.dynamodb.create_table(
                TableName=name,
                BillingMode="PAY_PER_REQUEST",
                KeySchema=[TABLE_KEY],
                AttributeDefinitions=[{"AttributeName": TABLE_KEY["AttributeName"], "AttributeType": "S"}],
                Tags=[{"Key": settings.PREFIX_TAG, "Value": config.prefix}],
            )
            state = "created"
        elif table["KeySchema"] != [TABLE_KEY]:
            raise ProvisionError(
                f"error: table {name} exists keyed by {table['KeySchema']}, not by stem: remove it, or use another FR_PREFIX"
            )
        else:
            state = "exists"
        self._wait_table(name, "ACTIVE")
        return state

    def _table(self, name):
        """DescribeTable's Table, or None when there is none."""
        try:
            return self.dynamodb.describe_table(TableName=name)["Table"]
        except self.dynamodb.exceptions.ResourceNotFoundException:
            return None

    def _wait_table(self, name, status):
        """Wait until the table's status is `status` (None: gone); ProvisionError after TABLE_PATIENCE s."""
        deadline = time.monotonic() + TABLE_PATIENCE
        pause = 0.05
        while True:
            table = self._table(name)
            if (table and table["TableStatus"]) == status:
                return
            if time.monotonic() > deadline:
                raise ProvisionError(f"table {name} not {status or 'gone'} after {TABLE_PATIENCE} s")
            threading.Event().wait(pause)
            pause = min(pause * 2, 2.0)


def upload_lifecycle(config):
    """The input bucket's lifecycle: every upload expires FR_UPLOAD_DAYS after it was made (S3 removes
    it within a day of that), and an unfinished multipart upload after a day."""
    return {
        "Rules": [
            {
                "ID": "uploads-expire",
                "Filter": {"Prefix": ""},
                "Status": "Enabled",
                "Expiration": {"Days": config.upload_days},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
            }
        ]
    }
