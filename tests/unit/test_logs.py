import json
import re
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from core import settings
from deploy import logs
from scaling import launching


class AgentConfigTest(unittest.TestCase):
    def test_setup_sh_and_a_members_user_data_put_the_agents_configuration_in_one_place(self):
        script = (settings.PROJECT_DIR / "setup.sh").read_text()
        shell = dict(re.findall(r"^LOG_AGENT_(CONFIG|CTL)=(\S+)$", script, re.MULTILINE))
        self.assertEqual(shell, {"CONFIG": launching.AGENT_CONFIG, "CTL": launching.AGENT_CTL})

    def test_each_host_ships_its_own_units_to_its_tiers_groups_one_stream_per_instance(self):
        config = settings.load_config({"FR_PREFIX": "blue"})
        ours = {p.name for p in (settings.PROJECT_DIR / "systemd").glob("*.service")}
        shipped = {}
        for role in ("web", "app"):
            for entry in logs.agent_config(config, role)["logs"]["logs_collected"]["journald"]["collect_list"]:
                self.assertTrue(entry["log_stream_name"].startswith("{instance_id}"), entry)
                shipped.setdefault(role, set()).add(entry["log_group_name"])
                for unit in entry.get("units", []):
                    self.assertTrue(unit in ours or unit == "hibinit-agent.service", unit)
        self.assertEqual(shipped, {"web": {"/blue/web", "/blue/autoscaler"}, "app": {"/blue/app"}})
        self.assertEqual(
            sorted(shipped["web"] | shipped["app"]), sorted(logs.log_groups(config)), "the groups provisioning makes"
        )
        ours_units = {u for tier in logs.SOURCES.values() for u in tier[0]}
        self.assertEqual(ours - ours_units, set(), "a service of ours no group ships")

    def test_the_command_reads_the_pools_prefix_over_the_images(self):
        with tempfile.TemporaryDirectory() as scratch:
            image, pool = Path(scratch, "image.env"), Path(scratch, "pool.env")
            image.write_text("FR_PREFIX=baked\nFR_REGION=eu-west-1\n")
            pool.write_text("FR_PREFIX=blue\n")
            done = subprocess.run(
                [sys.executable, "-m", "deploy.logs", "agent-config", "app", str(image), str(pool), str(Path(scratch, "none"))],
                cwd=settings.PROJECT_DIR,
                capture_output=True,
                text=True,
                check=True,
            )
        written = json.loads(done.stdout)
        self.assertEqual(written["agent"]["region"], "eu-west-1")
        groups = {e["log_group_name"] for e in written["logs"]["logs_collected"]["journald"]["collect_list"]}
        self.assertEqual(groups, {"/blue/app"})


if __name__ == "__main__":
    unittest.main()
