"""The dead man's switch: a member that nobody steers stops itself. Both sides are here: the
autoscaler's heartbeat (Beat) and the member's switch (Switch).

The autoscaler is the only thing that stops members. If it is gone (the web host crashed or was
stopped) or its steps keep failing, members left running would run, and be billed, for as long as
nobody looks. So each step the autoscaler finishes is heard: every FR_IDLE_STOP / 10 seconds it tags
the request queue BEAT_TAG=<epoch seconds> (TagQueue: an SQS request, free within SQS's free tier;
the queue is one every member reads already). A worker that has received no work for FR_IDLE_STOP
seconds reads that tag (ListQueueTags, at most every FR_IDLE_STOP / 10 seconds while idle), and
when the autoscaler has not been heard from for FR_IDLE_STOP seconds either, it exits with
POWER_OFF_EXIT: systemd/face-worker.service then powers the instance off, an instance-initiated
shutdown, which stops it (InstanceInitiatedShutdownBehavior=stop, set at launch: scaling/launching.py)
so that it is a member like any other next time. In local mode the launcher does as the guest's OS
would (simulation/localstack.py).

Idle time is counted on time.monotonic, which does not count a hibernation, from the worker's start
and from each resume (a resume is the autoscaler's doing: work is coming). A warm floor
(FR_MIN_INSTANCES) and members warming up (scaling/warming.py) are idle while their autoscaler is
alive: its heartbeat keeps them running. FR_IDLE_STOP=0 turns the switch off.
"""

import time

import common

log = common.EventLog("heartbeat")

BEAT_TAG = "fr-autoscaler-heard"
# The worker's exit status asking for the machine's power-off (systemd/face-worker.service's
# ExecStopPost acts on it; the local launcher too). EX_TEMPFAIL: nothing is wrong with the worker.
POWER_OFF_EXIT = 75
# The heartbeat is written, and read, this often: a tenth of FR_IDLE_STOP.
BEATS_PER_IDLE_STOP = 10


def beat_interval(config):
    return config.idle_stop / BEATS_PER_IDLE_STOP


class Beat:
    """The autoscaler's side: `heard()` after each step that succeeded tags the request queue, at
    most every beat_interval; a failed tag is logged and tried at the next step."""

    def __init__(self, config, sqs, queue_url, clock=time.monotonic, wall_clock=time.time):
        self.config, self.sqs, self.queue_url, self.clock, self.wall_clock = config, sqs, queue_url, clock, wall_clock
        self.due = -float("inf")

    def heard(self):
        from botocore.exceptions import BotoCoreError, ClientError

        if not self.config.idle_stop or self.clock() < self.due:
            return
        try:
            self.sqs.tag_queue(QueueUrl=self.queue_url, Tags={BEAT_TAG: f"{self.wall_clock():.3f}"})
            self.due = self.clock() + beat_interval(self.config)
        except (BotoCoreError, ClientError) as e:
            log.warning("heartbeat_failed", error=e, detail="members idle for FR_IDLE_STOP stop themselves")


def last_heard(sqs, queue_url):
    """When the autoscaler was last heard from (epoch seconds, by BEAT_TAG), or None: never."""
    tags = sqs.list_queue_tags(QueueUrl=queue_url).get("Tags", {})
    try:
        return float(tags[BEAT_TAG])
    except (KeyError, ValueError):
        return None


class Switch:
    """The worker's side: `worked()` when work comes (or the machine resumes), `due(sqs, url)` after
    each empty receive: True once the worker has been idle for FR_IDLE_STOP and the autoscaler
    unheard from for as long (said in one log line)."""

    def __init__(self, config, clock=time.monotonic, wall_clock=time.time):
        self.config, self.clock, self.wall_clock = config, clock, wall_clock
        self.idle_since = clock()
        self.next_look = -float("inf")

    def worked(self):
        self.idle_since = self.clock()

    def due(self, sqs, queue_url):
        from botocore.exceptions import BotoCoreError, ClientError

        limit = self.config.idle_stop
        now = self.clock()
        if not limit or now - self.idle_since < limit or now < self.next_look:
            return False
        self.next_look = now + limit / BEATS_PER_IDLE_STOP
        try:
            heard = last_heard(sqs, queue_url)
        except (BotoCoreError, ClientError) as e:  # not known to be gone: looked at again later
            log.warning("heartbeat_unread", error=e)
            return False
        silent = self.wall_clock() - heard if heard is not None else None
        if silent is not None and silent < limit:
            return False
        log.warning(
            "idle_stop",
            idle=f"{now - self.idle_since:.0f} s",
            autoscaler_silent="never heard" if silent is None else f"{silent:.0f} s",
            detail=f"no work and no autoscaler for FR_IDLE_STOP={limit:g} s: powering off",
        )
        return True
