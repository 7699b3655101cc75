"""The fork server's protocol (simulation/forkserver.py): each side reads what the other writes."""

import unittest

from simulation.forkserver import Event, parse_command, parse_event, start_command


class ProtocolTest(unittest.TestCase):
    def test_each_side_reads_what_the_other_writes(self):
        command = start_command("i-0abc", "app-tier-instance-3")
        self.assertEqual(parse_command(command), ("i-0abc", "app-tier-instance-3", None))
        command = start_command("i-0abc", "app-tier-instance-3", "http://127.0.0.1:4242")
        self.assertEqual(parse_command(command), ("i-0abc", "app-tier-instance-3", "http://127.0.0.1:4242"))
        for event in (Event("forked", "i-0a", 4242), Event("exited", "i-0a", 4242, -15), Event("exited", "i-1", 7, 78)):
            self.assertEqual(parse_event(event.line()), event)

    def test_log_lines_and_bad_commands_are_not_taken_for_protocol(self):
        self.assertIsNone(parse_event("2026-11-26 INFO worker event=ready queue=q batch=4"))
        self.assertIsNone(parse_command("start i-0abc"))
        self.assertIsNone(parse_command("stop i-0abc app-tier-instance-1"))


if __name__ == "__main__":
    unittest.main()
