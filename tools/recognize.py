"""What the service answers for these images, without the service:

    python -m tools.recognize IMAGE...

runs the model's command line (`python -m model`) with the weights, gallery and threads the workers
use (FR_WEIGHTS, FR_GALLERY, FR_TORCH_THREADS): the one place where the model's command line meets
the service's configuration, so that model/ imports nothing of the service.
"""

import sys

import common
from core import settings
from model.__main__ import main as model_main


def main(argv):
    config = settings.load_config_or_exit()
    common.setup_logging(config.log_level)
    return model_main(
        ["--weights", str(config.weights), "--gallery", str(config.gallery), "--threads", str(config.torch_threads), *argv]
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
