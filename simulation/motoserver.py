"""moto's server (`moto_server -H HOST -p PORT`, same arguments), with two fixes for local speed, a
call moto lacks, and with FR_SIMULATE=aws, AWS's own timings, refusals and lags (simulation/awslike/).

On this 2-core machine moto's CPU is the model's, and two of moto 5.2's habits cost it more than
the calls themselves. Both fixes give the answers moto gives; nothing else differs from moto_server.

- It finds the service of every request by listing its own package directory (172 entries, a stat
  each) under a lock that serialises all requests. The list cannot change while the server runs,
  so it is made once.
- For each message it hands out, it checks the queue's retention period by computing every
  attribute of the queue, three of which count the queue's messages one by one. The period is
  read directly instead.
What each fix saved is in docs/performance.md.

The call: GetEbsDefaultKmsKeyId (provisioning asks which key encrypts the members' volumes; moto
5.2 answers "not implemented"): the account's default EBS key, alias/aws/ebs, managed by AWS.
"""

import functools
import os
import sys

# The web role attaches AWS's managed policy AmazonSSMManagedInstanceCore: moto knows AWS's managed
# policies only when asked to load them (read when its IAM backend is made).
os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")

from moto import backends
from moto.core.responses import ActionResult
from moto.core.utils import unix_time
from moto.ec2.responses.elastic_block_store import ElasticBlockStore
from moto.server import main
from moto.sqs.models import SQSBackend

from core import settings
from simulation import awsiam, awslike


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


backends.list_of_moto_modules = functools.cache(lambda listed=backends.list_of_moto_modules: tuple(listed()))
SQSBackend.is_message_valid_based_on_retention_period = _retained
ElasticBlockStore.get_ebs_default_kms_key_id = get_ebs_default_kms_key_id

if __name__ == "__main__":
    config = settings.load_config_or_exit()
    if config.simulate == "aws":
        awslike.install(config.simulate_time_scale, config.state_dir)
        print(f"motoserver: AWS-like ({awslike.timings(config.simulate_time_scale)})", file=sys.stderr)
    main(sys.argv[1:])
