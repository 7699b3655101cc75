"""Create, and remove, everything the service needs in an AWS account (or a moto server).

    python -m deploy provision [--with-web] [--dry-run]
    python -m deploy teardown [--images] [--dry-run]
    python -m deploy bake-ami INSTANCE_ID [--dry-run]
    python -m deploy admin-key

`provision` is idempotent (a second run creates nothing) and prints what exists and what it made:
private, encrypted input/output/gallery/deploy buckets, the gallery seeded from FR_GALLERY unless it
has one; the gallery's admin key (deploy/adminkey.py; `admin-key` prints it); the request queue (1 KB messages, redrive to a
dead-letter queue after MAX_RECEIVES) and the response queue; with FR_RESULTS_TABLE=1 the results
table (on-demand DynamoDB); IAM roles and instance profiles for the web and app tiers whose
policies name the exact buckets, queues and table and only the actions each tier uses; and the
app-tier pool of FR_MAX_INSTANCES + FR_SPARE_INSTANCES stopped instances from FR_AMI_ID.
`--with-web` also uploads this code to the deploy bucket and launches the web host (Amazon Linux
2023, Elastic IP, port 8000 open to FR_WEB_CIDR only) whose user data runs `setup.sh web`.
`teardown` removes all of it (the web host first: its autoscaler must not see the pool go and launch
it again), then checks that nothing tagged ours is left; `--images` removes the app-tier images
too. `bake-ami` makes the app-tier image from an instance set up with `setup.sh app`, then
terminates that instance. Before anything is made, `provision` checks that the deployment's vCPUs
fit the account's On-Demand quota. Configuration is the services' FR_* variables (README).

Written against AWS's documented behaviour, not moto's (tests run it against simulation/awslike/).
This module holds the plans (what is made, in which order, and what the dry run says); the steps
are beside it, one module per concern: account.py (the account's checks), iam.py (policy documents
and roles), storage.py (buckets, queues, table), members.py (the pool), webhost.py (the web host,
its scripts and settings), image.py (the app image), teardown.py (removal and what is left).
"""

from functools import partial

import common
from core import cloud, settings
from deploy.account import VCPU_QUOTA, AccountSteps
from deploy.adminkey import AdminKeySteps
from deploy.alarms import AlarmSteps
from deploy.base import MAX_RECEIVES, WEB_PORT, ProvisionError
from deploy.iam import SSM_POLICY, RoleSteps, app_policy, web_policy
from deploy.image import ImageSteps
from deploy.logs import LogSteps
from deploy.members import PoolSteps
from deploy.storage import StorageSteps
from deploy.teardown import TeardownSteps
from deploy.webhost import CODE_KEY, RUN_SHELL, SETTINGS_KEY, WebHostSteps
from scaling import launching

log = common.EventLog("provision")


class Provisioner(
    RoleSteps, AccountSteps, StorageSteps, LogSteps, AlarmSteps, AdminKeySteps, PoolSteps, WebHostSteps, ImageSteps, TeardownSteps
):
    """Provisioning, teardown and the bake are plans: lists of (what a step makes or removes, the
    step). The dry run says each `what`; the real run does the steps, in order, and each `ensure_*`
    step returns its state ("exists", "created", ...; or (state, a longer what)) for the line said.

    Every step looks at what exists first, so a run that failed half-way is finished by running it
    again, and a second run makes nothing new (it uploads the code and settings again and updates a
    running web host). Calls AWS refuses for a while, as documented (a queue name just deleted, an
    instance profile not yet propagated, a security group still in use), are retried, bounded."""

    def __init__(self, config, session, dry_run=False, out=print):
        self.config, self.dry_run, self.out = config, dry_run, out
        for name in ("s3", "sqs", "ec2", "iam", "dynamodb", "ssm", "logs", "sns", "cloudwatch", "budgets"):
            setattr(self, name, session(name))  # self.s3, self.sqs, ...: the clients
        self.session, self._account = session, None
        self.baked = None  # the image bake_ami made

    def say(self, state, what):
        self.out(f"{state:<12} {what}")

    def run_plan(self, steps, would):
        """Say every step (dry run: `would` it), or do it and say what it did. A step of None is
        skipped, its `what` saying why."""
        for what, step in steps:
            if step is None:
                self.say("skipped", what)
            elif self.dry_run:
                self.say(would, what)
            else:
                done = step()
                if done is not None:
                    state, said = done if isinstance(done, tuple) else (done, what)
                    self.say(state, said)

    def waiting(self, error, pause):
        self.out(f"{'waiting':<12} {cloud.error_code(error).rsplit('.', 1)[-1]}: again in {pause:.1f} s")

    def provision(self, with_web=False):
        if with_web and not self.config.web_cidr:
            raise ProvisionError("config error: set FR_WEB_CIDR to the addresses that may reach port 8000")
        self.run_plan(self.provision_steps(with_web), "would ensure")

    def provision_steps(self, with_web):
        """Provisioning in order, as (what is made, the step making it; None: skipped, and why)."""
        config = self.config
        queue_kinds = {
            config.dead_letter_queue: "dead letters, kept 14 days",
            config.request_queue: f"visibility {config.visibility_timeout} s, dead letters after {MAX_RECEIVES} receives",
            config.response_queue: "replies",
        }
        table = f"DynamoDB table {config.results_table_name} (on-demand, keyed by stem)"
        web = (
            f"{settings.WEB_HOST_NAME} ({config.web_instance_type}, Elastic IP, port {WEB_PORT} open to "
            f"{config.web_cidr}; one running already: updated by Run Command {RUN_SHELL}, its services restarted)"
        )
        return [
            (f"default VPC in {config.region}", self.ensure_default_vpc),
            (f"vCPU quota {VCPU_QUOTA} fits {self.vcpus_wanted(with_web)}", partial(self.ensure_vcpus, with_web)),
            *(
                (
                    f"bucket {b} (public access blocked, AES256 encryption"
                    + (f"; uploads expire after {config.upload_days} days)" if b == config.in_bucket else ")"),
                    partial(self.ensure_bucket, b),
                )
                for b in (config.in_bucket, config.out_bucket, config.gallery_bucket, config.deploy_bucket)
            ),
            (f"gallery in s3://{config.gallery_bucket}, seeded from {config.gallery} unless it has one", self.seed_gallery),
            # The dead-letter queue first: the request queue names it.
            *(
                (f"queue {q} (1 KB messages; {kind})", lambda q=q: self.ensure_queue(q, self.queue_attributes(q)))
                for q, kind in queue_kinds.items()
            ),
            (table, self.ensure_table) if config.results_table else ("results table: FR_RESULTS_TABLE=0", None),
            *self.log_group_steps(),
            *self.alarm_steps(),
            (
                f"SSM parameter {config.admin_key_parameter} (SecureString: the gallery's admin key, made once; "
                "./setup.sh admin-key prints it)",
                self.ensure_admin_key,
            ),
            # SSM: an operator can get a shell on any host without SSH (none has a key pair or port 22).
            (
                f"IAM role + instance profile {config.role('web')} (its policy, + AmazonSSMManagedInstanceCore)",
                partial(self.ensure_role, "web", lambda: web_policy(config, self.account(), self.ebs_key()), [SSM_POLICY]),
            ),
            (
                f"IAM role + instance profile {config.role('app')} (its policy, + AmazonSSMManagedInstanceCore)",
                partial(self.ensure_role, "app", lambda: app_policy(config, self.account()), [SSM_POLICY]),
            ),
            (
                f"security group {launching.app_security_group_name(config)} (app tier: no inbound, all outbound)",
                self.ensure_app_security_group,
            ),
            (f"{self.pool_what()}, launched {config.max_instances} at a time{self.warm_up_what()}", self.ensure_pool)
            if config.ami_id
            else ("app-tier pool: set FR_AMI_ID (./setup.sh bake-ami makes one)", None),
            *(
                [
                    (f"code archive s3://{config.deploy_bucket}/{CODE_KEY}", self.upload_code),
                    (f"web host settings s3://{config.deploy_bucket}/{SETTINGS_KEY}", self.upload_settings),
                    (web, self.ensure_web_host),
                ]
                if with_web
                else []
            ),
        ]

    def teardown(self, images=False):
        """Remove everything `provision` made; with `images`, the app-tier images too.

        The web host goes first, and is waited on until terminated: its autoscaler would otherwise
        see the pool shutting down and launch it again. Then every other instance tagged ours, until
        none is left; then what they used (address, security group), queues, buckets and roles."""
        self.run_plan(self.teardown_steps(images), "would remove")

    def teardown_steps(self, images):
        """Teardown in order, as (what is removed, the step removing it): the dry run says the one,
        the real run does the other."""
        config = self.config
        queues = (config.request_queue, config.response_queue, config.dead_letter_queue)
        buckets = (config.in_bucket, config.out_bucket, config.gallery_bucket, config.deploy_bucket)
        return [
            (
                f"{settings.WEB_HOST_NAME} (first, waited on: its autoscaler must stop before the pool)",
                partial(self._terminate, [settings.WEB_HOST_NAME]),
            ),
            (f"every other instance tagged {settings.PREFIX_TAG}={config.prefix}", partial(self._terminate, ["*"])),
            ("Elastic IP", self._release_addresses),
            *(
                (f"security group {name}", partial(self._remove_security_group, name))
                for name in (f"{config.prefix}-web", launching.app_security_group_name(config))
            ),
            *((f"queue {name}", partial(self._remove_queue, name)) for name in queues),
            *((f"bucket {bucket} and its objects", partial(self._remove_bucket, bucket)) for bucket in buckets),
            (f"DynamoDB table {config.results_table_name} and its items (if any)", self._remove_table),
            *self.alarm_removals(),
            *self.log_group_removals(),
            (f"SSM parameter {config.admin_key_parameter} (the gallery's admin key)", self._remove_admin_key),
            *(
                (f"IAM role + instance profile {config.role(tier)}", partial(self._remove_role, config.role(tier)))
                for tier in ("web", "app")
            ),
            (
                "app-tier images and their snapshots" if images else "app-tier images: kept (--images removes them)",
                partial(self._images, remove=images),
            ),
        ]


def provision(config, session):
    """Provision with clients from `session(service name)`, each line said as a log event (the local
    stack and the tests)."""
    Provisioner(config, session, out=lambda line: log.info("provision", detail=" ".join(line.split()))).provision()
