"""The web host's services as the local stack runs them (simulation/localstack.py): the web tier and
the autoscaler, started together; each restarted RESTART_SECONDS after it fails, as their units'
`Restart=on-failure` does on AWS (systemd/face-.service.d/common.conf: not after exit 0, nor after
exit 78, a configuration error); and following the web host provisioned into moto, if any: both
stopped when it shuts down, restarted with the settings of an update sent to it (reporting its
outcome, as its SSM agent does), started again for a web host provisioned after it."""

import dataclasses
import math
import sys
import time

import common
from core import settings
from deploy.webhost import RUN_SHELL, SETTINGS_KEY
from scaling import pool
from simulation import awslike
from simulation.procs import Child, ChildFailed

log = common.EventLog("localstack")

PYTHON = sys.executable
START_TIMEOUT = 60
# How often the launcher looks for a web host in moto, until it finds one.
WEB_HOST_LOOK_SECONDS = 2.0
# systemd/face-.service.d/common.conf: RestartSec=2, RestartPreventExitStatus=78.
RESTART_SECONDS = 2.0
NOT_RESTARTED = (0, 78)


class WebHost:
    """The web host provisioned into moto, if any: its autoscaler is the one this stack runs, and
    stops when the host leaves `running` (its OS shutting down stops its services); a web host
    provisioned after it is looked for again."""

    def __init__(self, config, ec2, ssm, s3):
        self.config = config
        self.ec2, self.ssm, self.s3 = ec2, ssm, s3
        self.id = None
        self.looked = -math.inf
        self.commands = set()  # Run Commands sent to the host, seen
        self.asked = -math.inf

    def look(self):
        """The web host's id, looked for every WEB_HOST_LOOK_SECONDS until one is found; else None."""
        if self.id is None and time.monotonic() - self.looked >= WEB_HOST_LOOK_SECONDS:
            self.looked = time.monotonic()
            hosts = pool.ours(self.ec2, self.config, [settings.WEB_HOST_NAME], pool.ACTIVE_STATES)
            if hosts:
                self.id = hosts[0]["id"]
                log.info("web_host_found", instance=self.id, detail="the autoscaler here stands for its")
        return self.id

    def shutting_down(self):
        """The id of a web host seen before once it has left `running` (then forgotten: the next one
        found is another host); else None."""
        if self.look() is None or pool.instance_states(self.ec2, [self.id]).get(self.id) in pool.ACTIVE_STATES:
            return None
        gone, self.id = self.id, None
        return gone

    def update(self):
        """(the Run Commands, the web host's settings) once provisioning sent it an update
        (deploy/webhost.py update_web_host: a Run Command of the update script, which its SSM agent
        runs), the settings as the script puts them in place: {FR_* name: value}; else None."""
        if self.id is None or time.monotonic() - self.asked < WEB_HOST_LOOK_SECONDS:
            return None
        self.asked = time.monotonic()
        sent = {c["CommandId"] for c in self.ssm.list_commands(InstanceId=self.id)["Commands"] if c["DocumentName"] == RUN_SHELL}
        new = sent - self.commands
        if not new:
            return None
        self.commands |= new
        return new, self.settings()

    def settings(self):
        """The web host's settings as provisioning left them in the deploy bucket: {FR_* name: value}."""
        body = self.s3.get_object(Bucket=self.config.deploy_bucket, Key=SETTINGS_KEY)["Body"].read().decode()
        return settings.read_environment(body)

    def report(self, commands, status, error=""):
        """As the host's SSM agent does once the update script ended (simulation/awslike/account.py reads it)."""
        for command in commands:
            awslike.report_invocation(self.config.state_dir, command, status, error)


@dataclasses.dataclass
class HostServices:
    """The web tier and the autoscaler here, standing for a web host's, and their environment."""

    web: Child
    port: str
    scaler: Child
    env: dict
    host: str = None  # the web host they stand for (None until one is found)
    down: bool = False  # stopped with their host, or their update failed


def follow_web_host(config, web_host, host, logs, services, retired):
    """Do what the web host provisioned into moto does with its services (`host`): stop them when it
    shuts down (`retired`: stopped on purpose), restart them when it is sent an update (reporting
    its outcome, as its SSM agent does), start them for a web host provisioned after it (with the
    settings provisioning left in the deploy bucket, as its first boot reads them). The services now."""
    if not host.down:
        gone = web_host.shutting_down()
        if gone:
            # Its OS shutting down stops both services (they call AWS as the web role, which a
            # teardown removes once the host is terminated).
            log.info("web_host_shutting_down", instance=gone, detail="stopping the autoscaler and the web tier")
            for service in (host.scaler, host.web):
                service.signal()
                retired.add(service)
            return dataclasses.replace(host, down=True)
        if host.host is None and web_host.id:
            host = dataclasses.replace(host, host=web_host.id)
        update = web_host.update()
        return host if update is None else updated(config, web_host, host, update, logs, services, retired)
    found = web_host.look()
    if not found or found == host.host:
        return host
    # Provisioned again: the new host's services start (on the same port) once the old ones are gone.
    for service in (host.scaler, host.web):
        service.stop()
    env = host_env(config, host.env, web_host.settings(), host.port)
    web, port, scaler = start_host_services(config, env, logs, services)
    return HostServices(web, port, scaler, env, found)


def updated(config, web_host, host, update, logs, services, retired):
    """The host's services after its update script ran: restarted with the new settings; or, when
    they do not come up, down (the host stays, as a real one would), the update reported Failed."""
    commands, host_settings = update
    env = host_env(config, host.env, host_settings, host.port)
    try:
        web, scaler = update_host(config, env, logs, services, (host.web, host.scaler), web_host.id)
    except ChildFailed as e:
        reason = str(e).splitlines()[0]
        log.error("web_host_update_failed", instance=web_host.id, error=reason)
        web_host.report(commands, "Failed", reason)
        for service in services:
            if service.name in ("web", "autoscaler"):
                service.signal()
                retired.add(service)
        return dataclasses.replace(host, down=True)
    web_host.report(commands, "Success")
    return HostServices(web, host.port, scaler, env, host.host)


def start_host_services(config, env, logs, services):
    """The web host's services, once ready: (web tier, its port, autoscaler), each added to
    `services` as it is started (so that it is stopped with them, also when it never becomes ready)."""
    web, port = start_web(env, logs, services)
    return web, port, start_autoscaler(env, logs, services)


def start_web(env, logs, services):
    """The web tier, once it listens, added to `services`: (its Child, its port)."""
    web = Child("web", [PYTHON, str(settings.PROJECT_DIR / "web.py")], env, log_path=logs / "web.log")
    services.append(web)
    return web, web.wait_for(r"event=listening host=\S+ port=(\d+)", START_TIMEOUT)[1]


def start_autoscaler(env, logs, services):
    """The autoscaler, once it has taken its first step (the web tier's count read, the pool
    observed), added to `services`."""
    scaler = Child("autoscaler", [PYTHON, str(settings.PROJECT_DIR / "autoscaler.py")], env, log_path=logs / "autoscaler.log")
    services.append(scaler)
    scaler.wait_for("event=decision", START_TIMEOUT)
    return scaler


def restart_failed(host, logs, services, retired, restarts):
    """The host's services (`host`), each that failed restarted RESTART_SECONDS later, as its unit's
    Restart=on-failure does: not one stopped on purpose (`retired`), nor one that exited 0 or 78
    (then the stack's service_died ends it, as the unit stays failed). `restarts`: {failed Child:
    when it is restarted}, kept by the caller between calls; one the host no longer runs (replaced
    by an update meanwhile, or its host down) is not restarted."""
    for service in (host.web, host.scaler):
        status = service.popen.poll()
        if host.down or status is None or status in NOT_RESTARTED or service in retired:
            continue
        log.warning("service_failed", name=service.name, status=status, detail=f"restarted in {RESTART_SECONDS:g} s")
        retired.add(service)
        restarts[service] = time.monotonic() + RESTART_SECONDS
    for failed, due in list(restarts.items()):
        if time.monotonic() < due:
            continue
        del restarts[failed]
        if not host.down and failed in (host.web, host.scaler):
            host = restart(host, failed, logs, services, retired, restarts)
    return host


def restart(host, failed, logs, services, retired, restarts):
    """The host's services with `failed` (its web tier or autoscaler) started again, on the port it
    had; when the new one fails too, it is retired and tried again later, as its unit would be."""
    env = dict(host.env, FR_PORT=str(host.port))
    started = len(services)
    try:
        if failed is host.web:
            host = dataclasses.replace(host, web=start_web(env, logs, services)[0])
        else:
            host = dataclasses.replace(host, scaler=start_autoscaler(env, logs, services))
    except ChildFailed as e:
        for child in services[started:]:
            child.stop()
            retired.add(child)
        reason = str(e).splitlines()[0]
        log.warning("service_failed", name=failed.name, error=reason, detail=f"restarted in {RESTART_SECONDS:g} s")
        restarts[failed] = time.monotonic() + RESTART_SECONDS
        return host
    log.info("service_restarted", name=failed.name)
    return host


def update_host(config, env, logs, services, running, host):
    """As the update script does on the host: the new settings in place (`env`), both services
    restarted (`running`: the web tier and the autoscaler, replaced in `services`); the new ones."""
    log.info("web_host_updating", instance=host, detail="restarting the web tier and the autoscaler")
    for service in reversed(running):
        service.stop()
        services.remove(service)
    web, port, scaler = start_host_services(config, env, logs, services)
    log.info("web_host_updated", instance=host, url=f"http://{config.host}:{port}/")
    return web, scaler


def host_env(config, env, host_settings, port):
    """The web host's services' environment after an update: its new settings, but this stack's
    address and port (the host's are fixed: 0.0.0.0:8000), and on the AWS-like stack the guest's
    and SQS's delays scaled as the stack's own are."""
    fresh = dict(host_settings, FR_HOST=config.host, FR_PORT=str(port))
    if config.simulate == "aws":
        for name in SCALED:
            if name in fresh:
                fresh[name] = str(float(fresh[name]) * config.simulate_time_scale)
    return {**env, **fresh}


# The host's waits for the guest's and SQS's delays, by variable and Config field: scaled with them
# on the AWS-like stack.
SCALED = {
    "FR_HIBERNATE_AFTER_LAUNCH": "hibernate_after_launch",
    "FR_HIBERNATE_AFTER_RESUME": "hibernate_after_resume",
    "FR_SQS_COUNT_LAG": "sqs_count_lag",
    "FR_IDLE_STOP": "idle_stop",
}


def provision_config(config, env):
    """The configuration the local stack provisions with: on the AWS-like stack the warm-up waits
    out the guest's rules scaled as the host's services' are (scaled_env, `env`: this process's);
    with moto's plain instances provisioning does not warm up (the idle autoscaler does: its
    members run until FR_HIBERNATE_AFTER_LAUNCH after their launch, unscaled there)."""
    if config.simulate != "aws":
        return dataclasses.replace(config, warm_up=False)
    scaled = scaled_env(config, {name: env[name] for name in SCALED if name in env})
    return dataclasses.replace(config, **{field: float(scaled[name]) for name, field in SCALED.items()})


def scaled_env(config, env):
    """The host's services' environment: on the AWS-like stack, the guest's hibernation rules and
    SQS's count lag are scaled like every other delay, and so are the autoscaler's waits for them
    and the web tier's count of requests queued longer than the lag, unless set."""
    if config.simulate != "aws":
        return env
    scale = config.simulate_time_scale
    return {**{name: str(getattr(config, field) * scale) for name, field in SCALED.items()}, **env}
