"""`python -m deploy provision|teardown|bake-ami|admin-key`: see deploy/provision.py."""

import argparse
import sys

import common
from core import cloud, settings
from deploy.base import ProvisionError
from deploy.provision import Provisioner


def main(argv=None):
    parser = argparse.ArgumentParser(description="Provision, tear down or bake the app image.")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("provision")
    up.add_argument("--with-web", action="store_true")
    down = commands.add_parser("teardown")
    down.add_argument("--images", action="store_true", help="remove the app-tier images and snapshots too")
    bake = commands.add_parser("bake-ami")
    bake.add_argument("instance_id")
    commands.add_parser("admin-key", help="print the gallery's admin key (from SSM)")
    for command in commands.choices.values():
        command.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    config = settings.load_config_or_exit()
    common.setup_logging(config.log_level)
    provisioner = Provisioner(config, lambda name: cloud.client(config, name), dry_run=args.dry_run)
    try:
        if args.command == "provision":
            provisioner.provision(args.with_web)
        elif args.command == "teardown":
            provisioner.teardown(args.images)
            if not args.dry_run:
                left = provisioner.remaining()
                print(f"{'left':<12} {left}" if left else f"{'left':<12} nothing tagged {settings.PREFIX_TAG}={config.prefix}")
        elif args.command == "admin-key":
            print(provisioner.admin_key())
        else:
            provisioner.bake_ami(args.instance_id)
    except ProvisionError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
