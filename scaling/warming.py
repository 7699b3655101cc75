"""Warm-up: members made warm while the pool is idle, so that the next burst resumes them.

A member is warm when it is hibernated: started, it resumes with its worker's model in memory (about
12 s to a first answer at the AWS-like stack's timings) instead of booting (about 24 s). A member is
cold when it stopped plainly: launched and stopped at once (pool repair, provisioning with
FR_WARM_UP=0), or stopped too soon after a resume for its guest to hibernate (scaling/pool.py,
hibernation_unready: every short burst's members). While there is no work and the pool has settled
(no member still stopping or pending: the scale-in is seen through first), the pool starts its cold
members (as many as FR_MAX_INSTANCES leaves room for, so the vCPU quota holds: waves), lets each
boot until its guest says it is up (the `fr-guest` tag, core/guest.py: the agent's boot work done,
the model loaded, so the volume's blocks it needs are read), and hibernates it as soon as the guest
will. A member whose guest has not said so within PATIENCE, or says it cannot (its agent missing or
failed: core/guest.py, UNABLE), is stopped plainly and not tried again by this process (the log says
so once): it stays cold, as it was. Work ends the warm-up: the members warming become members like
any other (running workers: they take the work), and the scale-in that follows stops them as it
stops the others (within seconds of the last answer), to be warmed in the next idle spell.
Provisioning warms each wave it launches the same way (deploy/members.py).
"""

import time

import common
from core import guest
from scaling import pool

log = common.EventLog("warming")

# How long a warming member may take to be hibernated, beyond the launch rule: a boot, the agent's
# boot work and the model's load take well under a minute; this is far past them (a broken guest).
PATIENCE = 600.0


def enabled(config):
    """Whether the warm-up is on: FR_WARM_UP, with FR_HIBERNATE (a plain stop makes nothing warm)."""
    return config.hibernate and config.warm_up


def unable(member):
    """Whether `member`'s guest (pool.details) said its agent will not hibernate it this boot."""
    return (pool.guest_mark(member) or ("",))[0] == guest.UNABLE


class Warming:
    """The members this process started to warm them: {id: when}, and those it gave up on."""

    def __init__(self, config, monotonic=time.monotonic):
        self.config = config
        self.on = enabled(config)
        self.monotonic = monotonic
        self.started = {}
        self.given_up = set()

    def active(self, members):
        """Ids of `members` (as observed) that are warming and pending or running."""
        return {m["id"] for m in members if m["id"] in self.started and m["state"] in pool.ACTIVE_STATES}

    def cold(self, members, warm, room):
        """Up to `room` ids of `members` to start for a warm-up: stopped plainly (not in `warm`),
        launched for hibernation, not given up on; lowest numbers first."""
        if not self.on:
            return []
        cold = [
            m["id"]
            for m in members
            if m["state"] in pool.STARTABLE and m.get("hibernates") and m["id"] not in warm and m["id"] not in self.given_up
        ]
        return cold[: max(0, room)]

    def release(self):
        """Work has come: the members warming are the pool's again."""
        if self.started:
            log.info("warming_released", instances=",".join(sorted(self.started)), detail="work came: members like any other")
        self.started.clear()

    def begin(self, ids):
        """The members `ids`, running or about to, are warming from now (unless FR_WARM_UP is off)."""
        if not self.on:
            return
        now = self.monotonic()
        for instance in ids:
            self.started[instance] = now
            log.info("warming", instance=instance, detail="booted once, to hibernate as soon as its guest will")

    def due(self, members, details, now):
        """(ids to hibernate now: their guest will, ids to give up on: warming past PATIENCE) of the
        warming `members` running, by their `details` (pool.details) at epoch time `now`. Members no
        longer active are forgotten: stopped by the pool, or by someone else."""
        active = self.active(members)
        for instance in set(self.started) - active:
            del self.started[instance]
        ready, overdue = [], []
        for m in members:
            if m["id"] not in active or m["state"] not in pool.STOPPABLE or m["id"] not in details:
                continue
            if pool.hibernation_unready(details[m["id"]], now, self.config) is None:
                ready.append(m["id"])
            elif self.monotonic() - self.started[m["id"]] > self.config.hibernate_after_launch + PATIENCE or unable(
                details[m["id"]]
            ):
                overdue.append(m["id"])
        for instance in ready + overdue:
            del self.started[instance]
        self.given_up.update(overdue)
        for instance in overdue:
            log.warning(
                "warming_given_up",
                instance=instance,
                detail="its guest never said it was up, or said it cannot hibernate: stopped plainly, left cold",
            )
        return ready, overdue
