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
  post-resume hook wrote resumed_at, so the agent's 30 s count from before this);
- `unable <epoch>` when this boot's agent is missing or failed: the guest will not hibernate until
  it boots again (the pool stops it plainly, and its warm-up gives up on it at once).

A mark older than the instance's last start (EC2's LaunchTime) is an earlier start's: the guest has
not said anything since, and is not ready. The tag is the instance's own: it outlives an autoscaler's
restart, and a stop. The agent's state is read from systemd (`systemctl show hibinit-agent`) on AWS;
the local stack's launcher, standing in for the guest, writes a file instead (Config.agent_done_file).
"""

import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import common
from core import cloud

log = common.EventLog("guest")

GUEST_TAG = "fr-guest"
READY, RESUMED, UNABLE = "ready", "resumed", "unable"
AGENT_UNIT = "hibinit-agent.service"
# How often the worker looks at the agent's unit while it works, and for how long at most: the agent
# does its boot work in seconds to tens of seconds; one that has not finished in this long never will.
AGENT_POLL_SECONDS = 1.0
AGENT_PATIENCE = 900.0
# Written by the agent's sleep-handler.sh after a resume (epoch seconds); /var/run is empty after a boot.
RESUMED_AT = Path("/var/run/hibernate/resumed_at")
# A failed tag is tried again, the pause doubling from the first to the last, for REPORT_PATIENCE s
# (EC2 eventually consistent, the network not up yet after a resume, throttling).
REPORT_PAUSES = (1.0, 30.0)
REPORT_PATIENCE = 300.0
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
        return (event, float(at)) if event in (READY, RESUMED, UNABLE) else None
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


def resumed_at():
    """When the guest last resumed, by the agent's own file (epoch seconds), or None: booted since."""
    try:
        return float(RESUMED_AT.read_text().strip())
    except (OSError, ValueError):
        return None


def agent_failed(state):
    """Whether the agent's unit (agent_state) will not finish this boot: missing, or failed (it is
    not restarted: hibinit-agent.service has no Restart=)."""
    return state.get("LoadState") == "not-found" or state.get("ActiveState") == "failed"


# The unit's state once it has done its boot work, as the local stack's guest reports it.
AGENT_DONE = {"LoadState": "loaded", "ActiveState": "inactive", "Result": "success", "ExecMainExitTimestampMonotonic": "1"}


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
    except (OSError, ValueError):  # no metadata service (off EC2), or an answer that is no id
        return None


class Reporter:
    """The worker's side: tags its instance READY once this boot's agent work is done, RESUMED after
    each resume (and at its start, when it is a worker restarted after a resume: the agent's file
    says so). Each report runs in a thread of its own (never on the worker's critical path) with
    a client and session of its own (boto3's default session is not for threads; a resume leaves
    the old connections dead); a failed one is tried again for REPORT_PATIENCE, then logged, and
    the pool, seeing no mark since the start, stops the member plainly: safe, only slower next time."""

    def __init__(self, config, stop):
        self.config = config
        self.stop = stop
        self.instance = config.instance_id or None
        self.latest = -float("inf")  # the newest report's time: an older one still trying gives up

    def booted(self):
        threading.Thread(target=self._report_boot, name="guest-boot", daemon=True).start()

    def resumed(self):
        at = time.time()
        threading.Thread(target=self._tag, args=(RESUMED, at), name="guest-resume", daemon=True).start()

    def _agent_state(self):
        """The agent's unit's state (agent_state); on the local stack, whose launcher plays the
        guest, the unit's state once its file says the boot work is done, {} before."""
        if self.config.agent_done_file is None:
            return agent_state()
        return dict(AGENT_DONE) if self.config.agent_done_file.exists() else {}

    def _report_boot(self):
        # On a real guest (not the local stack's), a worker restarted since a resume says so.
        resumed = resumed_at() if self.config.agent_done_file is None else None
        if resumed is not None:
            self._tag(RESUMED, resumed)
            return
        deadline = time.monotonic() + AGENT_PATIENCE
        while not agent_finished(state := self._agent_state()):
            if agent_failed(state) or time.monotonic() > deadline or self.stop.wait(AGENT_POLL_SECONDS):
                if not self.stop.is_set():
                    log.warning("agent_not_finished", unit=AGENT_UNIT, state=state, detail="not hibernated: stopped plainly")
                    self._tag(UNABLE, time.time())
                return
        self._tag(READY, time.time())

    def _tag(self, event, at):
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        if self.instance is None:
            self.instance = instance_id()
        if self.instance is None:
            log.warning("no_instance_id", detail="not on EC2: the pool is not told this guest's state")
            return
        deadline = time.monotonic() + REPORT_PATIENCE
        pause, longest = REPORT_PAUSES
        self.latest = max(self.latest, at)
        while at >= self.latest:  # a newer report (a later resume) supersedes this one
            try:
                ec2 = cloud.client(self.config, "ec2", session=boto3.session.Session())
                ec2.create_tags(Resources=[self.instance], Tags=[{"Key": GUEST_TAG, "Value": mark(event, at)}])
                log.info("guest_reported", instance=self.instance, mark=event)
                return
            except (BotoCoreError, ClientError) as e:
                log.warning("guest_report_failed", instance=self.instance, mark=event, error=e, retry=f"{pause:g} s")
                if time.monotonic() + pause > deadline or self.stop.wait(pause):
                    return
                pause = min(pause * 2, longest)
