"""A member's own word on its guest, for the pool: whether it booted or resumed, and since when it
will hibernate. Both sides are here: the worker writes the mark (Reporter), the pool reads it (mark_of).

EC2 knows how an instance stopped (StateReason) but not whether its guest is up, nor whether the
hibernation agent in it (aws/amazon-ec2-hibinit-agent) would act on the sleep button now. The agent
has rules of its own: after a *resume* it ignores the button for 30 s (acpid.sleep.sh,
`should_hibernate`: `/var/run/hibernate/resumed_at`, which sleep-handler.sh writes after a resume;
`/var/run` is a tmpfs, empty after a boot), and on every *boot* its service (`hibinit-agent`, a
`Type=simple` unit that exits when done) first redoes its work: swapon, the kernel's resume offset,
`dracut -a resume -f` (agent/hibinit-agent, `update_kernel_swap_offset`). So the worker tags its own
instance with GUEST_TAG:

- `ready <epoch>` once this boot's agent work has finished and the model is loaded (a boot);
- `resumed <epoch>` when the post-hibernation hook lets it go on (a resume: after the OS's own
  post-resume hook wrote resumed_at, so the agent's 30 s count from before this).

A mark older than the instance's last start (EC2's LaunchTime) is an earlier start's: the guest has
not said anything since, and is not ready. The tag is the instance's own: it outlives an autoscaler's
restart, and a stop. The agent's state is read from systemd (`systemctl show hibinit-agent`) on AWS;
the local stack's launcher, standing in for the guest, writes a file instead (Config.agent_done_file).
"""

import subprocess
import threading
import time
import urllib.request

import common
from core import cloud

log = common.EventLog("guest")

GUEST_TAG = "fr-guest"
READY, RESUMED = "ready", "resumed"
AGENT_UNIT = "hibinit-agent.service"
# How often the worker looks at the agent's unit while it works, and for how long at most: the agent
# does its boot work in seconds to tens of seconds; one that has not finished in this long never will.
AGENT_POLL_SECONDS = 1.0
AGENT_PATIENCE = 900.0
# The instance metadata service (IMDSv2: a session token first), for the instance's own id.
IMDS = "http://169.254.169.254/latest"
IMDS_TIMEOUT = 2.0


def mark(event, at):
    """The tag's value: `event` (READY or RESUMED) at epoch time `at`."""
    return f"{event} {at:.3f}"


def mark_of(tags):
    """(event, epoch time) from an instance's Tags (a DescribeInstances list), or None."""
    value = next((t["Value"] for t in tags if t["Key"] == GUEST_TAG), "")
    event, _, at = value.partition(" ")
    try:
        return (event, float(at)) if event in (READY, RESUMED) else None
    except ValueError:
        return None


def agent_state(unit=AGENT_UNIT):
    """The agent unit's properties as `systemctl show` gives them ({} when systemctl is missing)."""
    try:
        out = subprocess.run(
            ["systemctl", "show", unit, "--property=LoadState,ActiveState,Result,ExecMainExitTimestampMonotonic"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def agent_finished(state):
    """Whether the agent's unit (agent_state) has run this boot and exited with success."""
    return (
        state.get("LoadState") == "loaded"
        and state.get("ActiveState") == "inactive"
        and state.get("Result") == "success"
        and state.get("ExecMainExitTimestampMonotonic", "0") not in ("", "0")
    )


def instance_id():
    """This instance's id from the instance metadata service (IMDSv2), or None off EC2."""
    try:
        token_request = urllib.request.Request(
            f"{IMDS}/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}
        )
        with urllib.request.urlopen(token_request, timeout=IMDS_TIMEOUT) as response:
            token = response.read().decode()
        id_request = urllib.request.Request(f"{IMDS}/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": token})
        with urllib.request.urlopen(id_request, timeout=IMDS_TIMEOUT) as response:
            return response.read().decode().strip()
    except OSError:
        return None


class Reporter:
    """The worker's side: tags its instance READY once this boot's agent work is done, RESUMED after
    each resume. Each report runs in a thread of its own (never on the worker's critical path) with
    a client of its own (a resume leaves the old connections dead); a failed one is logged, and the
    pool, seeing no mark since the start, stops the member plainly: safe, only slower next time."""

    def __init__(self, config, stop):
        self.config = config
        self.stop = stop
        self.instance = config.instance_id or None

    def booted(self):
        threading.Thread(target=self._report_boot, name="guest-boot", daemon=True).start()

    def resumed(self):
        at = time.time()
        threading.Thread(target=self._tag, args=(RESUMED, at), name="guest-resume", daemon=True).start()

    def _agent_done(self):
        if self.config.agent_done_file is not None:
            return self.config.agent_done_file.exists()
        return agent_finished(agent_state())

    def _report_boot(self):
        deadline = time.monotonic() + AGENT_PATIENCE
        while not self._agent_done():
            if time.monotonic() > deadline or self.stop.wait(AGENT_POLL_SECONDS):
                if not self.stop.is_set():
                    log.warning(
                        "agent_not_finished", unit=AGENT_UNIT, state=agent_state(), detail="not hibernated: stopped plainly"
                    )
                return
        self._tag(READY, time.time())

    def _tag(self, event, at):
        from botocore.exceptions import BotoCoreError, ClientError

        if self.instance is None:
            self.instance = instance_id()
        if self.instance is None:
            log.warning("no_instance_id", detail="not on EC2: the pool is not told this guest's state")
            return
        try:
            cloud.client(self.config, "ec2").create_tags(
                Resources=[self.instance], Tags=[{"Key": GUEST_TAG, "Value": mark(event, at)}]
            )
            log.info("guest_reported", instance=self.instance, mark=event)
        except (BotoCoreError, ClientError) as e:
            log.warning("guest_report_failed", instance=self.instance, mark=event, error=e)
