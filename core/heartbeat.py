"""The dead man's switch: a member that nobody steers stops itself. Both sides are here: the
autoscaler's heartbeat (Beat) and the member's switch (Switch).

The autoscaler is the only thing that stops members. If it is gone (the web host crashed or was
stopped) or its steps keep failing, members left running would run, and be billed, for as long as
nobody looks. So each step the autoscaler finishes is heard: every beat_interval (a tenth of FR_IDLE_STOP, at
most BEAT_SECONDS) it tags the request queue BEAT_TAG="<epoch seconds> <its FR_IDLE_STOP>"
(TagQueue: an SQS request, free within SQS's free tier; the queue is one every member reads
already). The autoscaler's FR_IDLE_STOP is the one members obey (theirs, from their launch, only
until they have heard it): changed on the web host, it holds for members launched before. A worker
that has received no work for that long reads the tag (ListQueueTags, after an empty receive, at
most every tenth of it), and when the autoscaler has not been heard from for as long either, it exits with
POWER_OFF_EXIT: systemd/face-worker.service then powers the instance off, an instance-initiated
shutdown, which stops it (InstanceInitiatedShutdownBehavior=stop, set at launch: scaling/launching.py)
so that it is a member like any other next time. In local mode the launcher does as the guest's OS
would (simulation/localstack.py).

Idle time is counted on time.monotonic, which does not count a hibernation, from the worker's start
and from each resume (a resume is the autoscaler's doing: work is coming). A warm floor
(FR_MIN_INSTANCES) and members warming up (scaling/warming.py) are idle while their autoscaler is
alive: its heartbeat keeps them running. FR_IDLE_STOP=0 (the autoscaler's) turns the switch off.
The time in the tag is the web host's clock, compared with the member's (EC2 keeps both on the
Amazon Time Sync Service).
"""

import time

import common

log = common.EventLog("heartbeat")

BEAT_TAG = "fr-autoscaler-heard"
# The worker's exit status asking for the machine's power-off (systemd/face-worker.service's
# ExecStopPost acts on it; the local launcher too). EX_TEMPFAIL: nothing is wrong with the worker.
POWER_OFF_EXIT = 75
# The heartbeat is written, and read, this often: a tenth of FR_IDLE_STOP, at most BEAT_SECONDS
# (also with the switch off: members launched with another limit read that it is).
BEATS_PER_IDLE_STOP = 10
BEAT_SECONDS = 30.0


def beat_interval(limit):
    return min(BEAT_SECONDS, limit / BEATS_PER_IDLE_STOP) if limit else BEAT_SECONDS


class Beat:
    """The autoscaler's side: `heard()` after each step that succeeded tags the request queue, at
    most every beat_interval; a failed tag is said once (until one succeeds) and tried at the next step."""

    def __init__(self, config, sqs, queue_url, clock=time.monotonic, wall_clock=time.time):
        self.config, self.sqs, self.queue_url, self.clock, self.wall_clock = config, sqs, queue_url, clock, wall_clock
        self.due = -float("inf")
        self.failures = common.Failures(log, "heartbeat_failed")  # members idle for FR_IDLE_STOP stop themselves

    def heard(self):
        from botocore.exceptions import BotoCoreError, ClientError

        if self.clock() < self.due:
            return
        try:
            self.sqs.tag_queue(QueueUrl=self.queue_url, Tags={BEAT_TAG: f"{self.wall_clock():.3f} {self.config.idle_stop:g}"})
            self.due = self.clock() + beat_interval(self.config.idle_stop)
            self.failures.recovered()
        except (BotoCoreError, ClientError) as e:
            self.failures.failed(e)


def last_heard(sqs, queue_url):
    """(when the autoscaler was last heard from, epoch seconds; its FR_IDLE_STOP) by BEAT_TAG, or
    None: never."""
    tags = sqs.list_queue_tags(QueueUrl=queue_url).get("Tags", {})
    try:
        at, limit = tags[BEAT_TAG].split()
        return float(at), float(limit)
    except (KeyError, ValueError):
        return None


class Switch:
    """The worker's side: `worked()` when work comes (or the machine resumes), `due(sqs, url)` after
    each empty receive: True once the worker has been idle for the limit (the autoscaler's
    FR_IDLE_STOP as last heard, else its own) and the autoscaler unheard from for as long (said in
    one log line)."""

    def __init__(self, config, clock=time.monotonic, wall_clock=time.time):
        self.clock, self.wall_clock = clock, wall_clock
        self.limit = config.idle_stop  # this member's, until the autoscaler's is heard
        self.idle_since = clock()
        self.next_look = -float("inf")

    def worked(self):
        self.idle_since = self.clock()

    def due(self, sqs, queue_url):
        from botocore.exceptions import BotoCoreError, ClientError

        now = self.clock()
        if now - self.idle_since < (self.limit or BEAT_SECONDS) or now < self.next_look:
            return False
        self.next_look = now + beat_interval(self.limit)
        try:
            heard = last_heard(sqs, queue_url)
        except (BotoCoreError, ClientError) as e:  # not known to be gone: looked at again later
            log.warning("heartbeat_unread", error=e)
            return False
        if heard is not None:
            self.limit = heard[1]  # the autoscaler's word (0: off)
        silent = self.wall_clock() - heard[0] if heard is not None else None
        limit = self.limit
        if not limit or now - self.idle_since < limit or (silent is not None and silent < limit):
            return False
        log.warning(
            "idle_stop",
            idle=f"{now - self.idle_since:.0f} s",
            autoscaler_silent="never heard" if silent is None else f"{silent:.0f} s",
            detail=f"no work and no autoscaler for FR_IDLE_STOP={limit:g} s: powering off",
        )
        return True
