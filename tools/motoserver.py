"""moto's server (`moto_server -H HOST -p PORT`, same arguments), with two fixes for local speed,
and with FR_SIMULATE=aws, AWS's own timings, refusals and lags (tools/awslike.py).

On this 2-core machine moto's CPU is the model's, and two of moto 5.2's habits cost it more than
the calls themselves. Both fixes give the answers moto gives; nothing else differs from moto_server.

- It finds the service of every request by listing its own package directory (172 entries, a stat
  each) under a lock that serialises all requests. The list cannot change while the server runs,
  so it is made once.
- For each message it hands out, it checks the queue's retention period by computing every
  attribute of the queue, three of which count the queue's messages one by one. The period is
  read directly instead.
What each fix saved is in docs/performance.md.
"""

import functools
import os
import sys

# The web role attaches AWS's managed policy AmazonSSMManagedInstanceCore: moto knows AWS's managed
# policies only when asked to load them (read when its IAM backend is made).
os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")

from moto import backends
from moto.core.utils import unix_time
from moto.server import main
from moto.sqs.models import SQSBackend

import settings
from tools import awslike


def _retained(self, queue_name, message):
    """moto's SQSBackend.is_message_valid_based_on_retention_period, reading the one attribute."""
    period = int(self.get_queue(queue_name).message_retention_period)
    return period + message.sent_timestamp / 1000 > unix_time()


backends.list_of_moto_modules = functools.cache(lambda listed=backends.list_of_moto_modules: tuple(listed()))
SQSBackend.is_message_valid_based_on_retention_period = _retained

if __name__ == "__main__":
    config = settings.load_config_or_exit()
    if config.simulate == "aws":
        awslike.install(config.simulate_time_scale, config.state_dir)
        print(f"motoserver: AWS-like ({awslike.timings(config.simulate_time_scale)})", file=sys.stderr)
    main(sys.argv[1:])
