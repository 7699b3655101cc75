"""What every deployment step shares: the error it refuses with, its bounded waits, and small helpers."""

from core import cloud

# Receives before a message that keeps failing is moved to the dead-letter queue.
MAX_RECEIVES = 3
WEB_PORT = 8000
# Bounded waits, in seconds. IAM: reported up to about 2 minutes for an instance profile to be
# usable by EC2; SQS: a deleted queue's name is free again after 60 s; instance state changes:
# usually seconds, minutes when EC2 is busy.
PROFILE_PATIENCE = 180
INSTANCE_PATIENCE = 600


class ProvisionError(Exception):
    """What stops a provisioning step, in one line for the operator (main: stderr, exit status 1)."""


def _tagged(instance, key, value):
    return any(t["Key"] == key and t["Value"] == value for t in instance.get("Tags", []))


def refused_with(code):
    """A `passing` test for cloud.while_refused: AWS's error `code` (query or JSON protocol form)."""
    return lambda error: cloud.error_code(error).endswith(code)
