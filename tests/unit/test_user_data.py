import os
import shlex
import subprocess
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import boto3
from botocore.stub import Stubber

from core import heartbeat, settings
from deploy import webhost
from deploy.base import ProvisionError
from deploy.provision import Provisioner
from deploy.webhost import web_host_script
from scaling import launching


class MemberUserDataTest(unittest.TestCase):
    def test_the_worker_restarts_once_the_pool_settings_are_in_place(self):
        # cloud-init runs user data late in the first boot, after face-worker.service has started
        # with the image's settings: run as bash runs it, with a systemctl that records what it was
        # asked and what the settings file held at that moment.
        config = settings.load_config({"FR_PREFIX": "blue", "FR_REGION": "eu-west-1", "FR_REQUEST_TIMEOUT": "90"})
        with tempfile.TemporaryDirectory() as scratch:
            scratch = Path(scratch)
            target = scratch / "face-recognition-pool.env"
            (scratch / "systemctl").write_text(f'#!/bin/sh\necho "$* | $(tr "\\n" " " < {target})" >> {scratch}/asked\n')
            (scratch / "systemctl").chmod(0o755)
            script = launching.member_user_data(config, settings_path=target)
            env = dict(os.environ, PATH=f"{scratch}:{os.environ['PATH']}")
            subprocess.run(["bash", "-c", script], env=env, check=True)
            self.assertEqual(
                settings.read_environment(target.read_text()),
                {"FR_PREFIX": "blue", "FR_REGION": "eu-west-1", "FR_REQUEST_TIMEOUT": "90", "FR_IDLE_STOP": "300"},
            )
            self.assertEqual(
                (scratch / "asked").read_text(),
                "try-restart face-worker.service | FR_PREFIX=blue FR_REGION=eu-west-1 FR_REQUEST_TIMEOUT=90 FR_IDLE_STOP=300 \n",
            )

    def test_the_worker_unit_powers_the_machine_off_only_when_the_dead_mans_switch_trips(self):
        # ExecStopPost as systemd runs it: its "$$" made "$", EXIT_STATUS set, a systemctl that records.
        unit = (settings.PROJECT_DIR / "systemd/face-worker.service").read_text()
        self.assertIn(f"\nSuccessExitStatus={heartbeat.POWER_OFF_EXIT}\n", unit)
        self.assertIn(f"\nRestartPreventExitStatus={heartbeat.POWER_OFF_EXIT}\n", unit)
        (line,) = [x for x in unit.splitlines() if x.startswith("ExecStopPost=+")]
        command = shlex.split(line.removeprefix("ExecStopPost=+").replace("$$", "$"))
        with tempfile.TemporaryDirectory() as scratch:
            (Path(scratch) / "systemctl").write_text(f'#!/bin/sh\necho "$*" >> {scratch}/asked\n')
            (Path(scratch) / "systemctl").chmod(0o755)
            for status in ("0", "1", "78", str(heartbeat.POWER_OFF_EXIT)):
                env = dict(os.environ, PATH=f"{scratch}:{os.environ['PATH']}", EXIT_STATUS=status)
                subprocess.run(command, env=env, check=True)
            self.assertEqual((Path(scratch) / "asked").read_text(), "--no-block poweroff\n")


COMMAND = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"


class WebHostUpdateTest(unittest.TestCase):
    """The update of a running web host is a Run Command: provisioning waits for what its agent says."""

    def update(self, *invocations):
        config = settings.load_config({"FR_PREFIX": "blue"})
        clients = {}

        def session(name):
            if name not in clients:
                clients[name] = boto3.client(
                    name,
                    region_name="us-east-1",
                    aws_access_key_id="k",
                    aws_secret_access_key="s",
                    endpoint_url="http://127.0.0.1:9",
                )
            return clients[name]

        ssm = session("ssm")
        stub = Stubber(ssm)
        stub.add_response("send_command", {"Command": {"CommandId": COMMAND}})
        for invocation in invocations:
            if isinstance(invocation, str):
                stub.add_client_error("get_command_invocation", invocation)
            else:
                stub.add_response("get_command_invocation", invocation)
        stub.activate()
        said = []
        with mock.patch.object(webhost, "UPDATE_POLL", 0.01):  # the agent's answers are all here
            Provisioner(config, session, out=said.append).update_web_host("i-web")
        stub.assert_no_pending_responses()
        return said

    def test_an_update_is_said_done_only_once_its_agent_says_it_succeeded(self):
        said = self.update("InvocationDoesNotExist", {"Status": "InProgress"}, {"Status": "Success"})
        self.assertEqual([line.split()[0] for line in said], ["updated"])

    def test_a_failed_update_fails_the_run_with_its_last_error_line(self):
        with self.assertRaisesRegex(
            ProvisionError, rf"i-web \(Run Command {COMMAND}\): the update ended Failed: pip: no network;"
        ):
            self.update({"Status": "InProgress"}, {"Status": "Failed", "StandardErrorContent": "dnf: ok\npip: no network\n"})

    def test_the_update_and_the_first_boot_take_one_lock(self):
        config = settings.load_config({})
        self.assertIn("exec 9>/var/lock/face-rec-setup\nflock 9\n", web_host_script(config))


if __name__ == "__main__":
    unittest.main()
