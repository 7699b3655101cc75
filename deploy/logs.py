"""Logs in one place: a CloudWatch Logs group per tier, which every host's CloudWatch agent ships
its services' journal lines to, so that a member's lines outlive it.

Groups (log_groups): `/{prefix}/web` (the web tier), `/{prefix}/autoscaler`, `/{prefix}/app` (the
workers, their hibernation hooks and the hibernation agent), one stream per instance (its id), kept
RETENTION_DAYS. Provisioning makes them with their retention and teardown removes them; the roles
may only add streams and events to their own tier's groups (deploy/iam.py).

The agent (Amazon Linux 2023's `amazon-cloudwatch-agent`, AWS's own) reads systemd's journal from
release 1.300070.0 on (June 2026: `logs.logs_collected.journald`, aws/amazon-cloudwatch-agent
RELEASE_NOTES); `setup.sh web` and `setup.sh app` install it and its configuration from
`python -m deploy.logs agent-config TIER` (agent_config). A member's pool may have another FR_PREFIX
than its image: its user data writes the configuration again at its first boot (scaling/launching.py).
Locally the stack's logs stay files (FR_STATE_DIR/logs).
"""

import json
import os
import sys
from pathlib import Path

from core import settings

RETENTION_DAYS = 14

# tier -> (its hosts' systemd units, journal matches beside them), one group each; a host runs the
# tiers of its role (TIERS_OF).
SOURCES = {
    "web": (["face-web.service"], []),
    "autoscaler": (["face-autoscaler.service"], []),
    # The hibernation agent logs as `hibernate` from acpid's action (no unit of its own).
    "app": (["face-worker.service", "face-worker-sleep.service", "hibinit-agent.service"], [{"SYSLOG_IDENTIFIER": "hibernate"}]),
}
TIERS_OF = {"web": ("web", "autoscaler"), "app": ("app",)}


def log_group(config, tier):
    return f"/{config.prefix}/{tier}"


def log_groups(config):
    return [log_group(config, tier) for tier in SOURCES]


def agent_config(config, role):
    """The CloudWatch agent's configuration for a host of `role` ("web" or "app"): each tier's units,
    and its journal matches (a stream of their own: the agent ORs matches, not matches and units),
    to the tier's group, one stream per instance."""
    collect = []
    for tier in TIERS_OF[role]:
        units, matches = SOURCES[tier]
        collect.append({"log_group_name": log_group(config, tier), "log_stream_name": "{instance_id}", "units": units})
        if matches:
            stream = "{instance_id}-" + matches[0]["SYSLOG_IDENTIFIER"]
            collect.append({"log_group_name": log_group(config, tier), "log_stream_name": stream, "matches": matches})
    return {"agent": {"region": config.region}, "logs": {"logs_collected": {"journald": {"collect_list": collect}}}}


class LogSteps:
    """Provisioner's steps for the log groups."""

    def log_group_steps(self):
        groups = ", ".join(log_groups(self.config))
        what = f"kept {RETENTION_DAYS} days: each host's CloudWatch agent ships its services' journal"
        return [(f"log groups {groups} ({what})", self.ensure_log_groups)]

    def log_group_removals(self):
        return [(f"log groups {', '.join(log_groups(self.config))} and their streams", self._remove_log_groups)]

    def ensure_log_groups(self):
        """Each group made when missing, then each one's retention set (runs of one call: a
        provision stopped between them is finished by the next)."""
        made = []
        for name in log_groups(self.config):
            try:
                self.logs.create_log_group(logGroupName=name, tags={settings.PREFIX_TAG: self.config.prefix})
                made.append(name)
            except self.logs.exceptions.ResourceAlreadyExistsException:
                pass
        for name in log_groups(self.config):
            self.logs.put_retention_policy(logGroupName=name, retentionInDays=RETENTION_DAYS)
        return f"created {len(made)}" if made else "exists"

    def _remove_log_groups(self):
        for name in log_groups(self.config):
            try:
                self.logs.delete_log_group(logGroupName=name)
                self.out(f"{'removed':<12} log group {name}")
            except self.logs.exceptions.ResourceNotFoundException:
                pass

    def remaining_log_groups(self):
        prefix = f"/{self.config.prefix}/"
        found = self.logs.describe_log_groups(logGroupNamePrefix=prefix).get("logGroups", [])
        return [("log group", g["logGroupName"]) for g in found if g["logGroupName"] in log_groups(self.config)]


def main(argv):
    """`python -m deploy.logs agent-config web|app [ENV_FILE...]`: the agent's configuration, as
    JSON, for the FR_PREFIX and FR_REGION of the environment files (later ones win, as in
    systemd/face-.service.d/common.conf; a missing one is skipped), over this process's."""
    if len(argv) < 2 or argv[0] != "agent-config" or argv[1] not in TIERS_OF:
        print("usage: python -m deploy.logs agent-config web|app [ENV_FILE...]", file=sys.stderr)
        return 2
    environ = dict(os.environ)
    for path in map(Path, argv[2:]):
        if path.exists():
            environ.update(settings.read_environment(path.read_text()))
    print(json.dumps(agent_config(settings.load_config(environ), argv[1]), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
