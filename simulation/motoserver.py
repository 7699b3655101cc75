"""moto's server (`moto_server -H HOST -p PORT`, same arguments), with fixes for local speed, a
call moto lacks, and with FR_SIMULATE=aws, AWS's own timings, refusals and lags (simulation/awslike/).

On this 2-core machine moto's CPU is the model's, and four of moto 5.2's habits cost it more than
the calls themselves. Each fix gives the answers moto gives; nothing else differs from moto_server.

- It finds the service of every request by listing its own package directory (172 entries, a stat
  each) under a lock that serialises all requests. The list cannot change while the server runs,
  so it is made once.
- For each message it hands out, it checks the queue's retention period by computing every
  attribute of the queue, three of which count the queue's messages one by one. The period is
  read directly instead.
- For each call, it lists the functions of the service's response class (inspect.getmembers over
  hundreds) to see whether the action is one. The classes do not change once the server runs (the
  AWS-like stack adds its methods before), so each class's list is made once.
- To serialise a response, for each attribute of each object it asks six alias providers which
  names the attribute may have (the same names every time for the same class of object, the same
  key and the same shape) and matches the path against every response transformer (the same
  answer every time for the same path). Both are remembered (picked_value): DescribeInstances of
  15 instances, the call the pool, the launcher and the tests make most, takes about 40% less CPU.
- At import, moto.ec2 lists EC2's regions of three partitions, each on a boto3 Session of its own:
  three reads of EC2's service model (the largest botocore has). One session answers all three
  (available_regions), and any later region list, with the same lists.
What each fix saved is in docs/performance.md.

The call: GetEbsDefaultKmsKeyId (provisioning asks which key encrypts the members' volumes; moto
5.2 answers "not implemented"): the account's default EBS key, alias/aws/ebs, managed by AWS.
"""

import functools
import importlib
import os
import sys
from typing import Any

import boto3.session
from moto import backends
from moto.core import responses, serialize
from moto.core.responses import ActionResult
from moto.core.utils import MISSING, get_value, unix_time
from moto.server import main
from moto.sqs.models import SQSBackend

from core import settings
from simulation import awsiam, awslike

# The web role attaches AWS's managed policy AmazonSSMManagedInstanceCore: moto knows AWS's managed
# policies only when asked to load them (read when its IAM backend is made, at the first IAM call).
MOTO_ENVIRONMENT = {"MOTO_IAM_LOAD_MANAGED_POLICIES": "true"}


def moto_environment():
    """Set what moto reads from the environment, unless set (again in run: a forked server's
    environment is its stand-in's, simulation/motofork.py)."""
    for name, value in MOTO_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


listed_regions = boto3.session.Session.get_available_regions
_one_session = functools.cache(boto3.session.Session)


@functools.cache
def _regions(service_name, partition_name="aws", allow_non_regional=False):
    return tuple(listed_regions(_one_session(), service_name, partition_name, allow_non_regional))


def available_regions(self, service_name, partition_name="aws", allow_non_regional=False):
    """boto3's Session.get_available_regions, each list made once, on one session."""
    return list(_regions(service_name, partition_name, allow_non_regional))


def _retained(self, queue_name, message):
    """moto's SQSBackend.is_message_valid_based_on_retention_period, reading the one attribute."""
    period = int(self.get_queue(queue_name).message_retention_period)
    return period + message.sent_timestamp / 1000 > unix_time()


def get_ebs_default_kms_key_id(self):
    """GetEbsDefaultKmsKeyId, with alias/aws/ebs managed by AWS (moto makes it a customer key)."""
    backend = self.ec2_backend
    if not backend.default_kms_key_id:
        backend._create_default_encryption_key()
    awsiam.aws_managed_ebs_key(backend)
    return ActionResult({"KmsKeyId": backend.default_kms_key_id})


# (type of the object, its Meta, key, shape) -> the names the attribute may have, in moto's order
_NAMES: dict[tuple, tuple[str, ...]] = {}
# (the transformers' dict, its size, *path, key) -> the transformer's key that matches, or None
_TRANSFORMERS: dict[tuple, Any] = {}
moto_get_value = serialize.ResponseSerializer.get_value


def picked_value(self, value, key, shape):
    """moto's ResponseSerializer.get_value (through XFormedAttributePicker, which every ActionResult
    uses), with the names each alias provider gives and the transformer that matches remembered.
    A transformer is looked up when used: moto replaces one for each CreateVpcPeeringConnection."""
    picker = self._value_picker
    if type(picker) is not serialize.XFormedAttributePicker:
        return moto_get_value(self, value, key, shape)
    names_key = (type(value), getattr(value, "Meta", None), key, shape)
    names = _NAMES.get(names_key)
    if names is None:
        context = serialize.AttributePickerContext(obj=value, key=key, shape=shape)
        names = _NAMES[names_key] = tuple(dict.fromkeys(picker.get_possible_keys(context)))
    for name in names:
        found = get_value(value, name, MISSING)
        if found is not MISSING:
            break
    else:
        found = None
    transformers = picker.response_transformers
    if transformers:
        at = (id(transformers), len(transformers), *self.path, key)
        path = _TRANSFORMERS.get(at, MISSING)
        if path is MISSING:
            key_path = f"{'.'.join(self.path)}.{key}"
            path = _TRANSFORMERS[at] = next((p for p in transformers if key_path.endswith(p)), None)
        if path is not None:
            return transformers[path](found)
    return found


backends.list_of_moto_modules = functools.cache(lambda listed=backends.list_of_moto_modules: tuple(listed()))
responses.method_names_from_class = functools.cache(lambda cls, listed=responses.method_names_from_class: frozenset(listed(cls)))
serialize.ResponseSerializer.get_value = picked_value
SQSBackend.is_message_valid_based_on_retention_period = _retained
moto_environment()
boto3.session.Session.get_available_regions = available_regions
# Imported once the region lists are patched: moto.ec2 makes its three at import.
ebs = importlib.import_module("moto.ec2.responses.elastic_block_store")
ebs.ElasticBlockStore.get_ebs_default_kms_key_id = get_ebs_default_kms_key_id


def run(argv):
    """moto_server with `argv` (its own arguments), AWS-like with FR_SIMULATE=aws."""
    moto_environment()
    config = settings.load_config_or_exit()
    if config.simulate == "aws":
        awslike.install(config.simulate_time_scale, config.state_dir)
        print(f"motoserver: AWS-like ({awslike.timings(config.simulate_time_scale)})", file=sys.stderr)
    main(argv)


if __name__ == "__main__":
    run(sys.argv[1:])
