import unittest

from core import heartbeat, settings


class FakeSQS:
    """The request queue's tags, as TagQueue and ListQueueTags keep them."""

    def __init__(self):
        self.tags, self.reads = {}, 0

    def tag_queue(self, QueueUrl, Tags):
        self.tags.update(Tags)

    def list_queue_tags(self, QueueUrl):
        self.reads += 1
        return {"Tags": dict(self.tags)} if self.tags else {}


class SwitchTest(unittest.TestCase):
    def setUp(self):
        self.config = settings.load_config({"FR_IDLE_STOP": "100"})
        self.clock, self.wall = [0.0], [1_000_000.0]
        self.sqs = FakeSQS()
        self.beat = heartbeat.Beat(self.config, self.sqs, "url", lambda: self.clock[0], lambda: self.wall[0])

    def switch(self):
        return heartbeat.Switch(self.config, clock=lambda: self.clock[0], wall_clock=lambda: self.wall[0])

    def advance(self, seconds):
        self.clock[0] += seconds
        self.wall[0] += seconds

    def test_a_member_stops_only_idle_for_fr_idle_stop_with_its_autoscaler_silent_as_long(self):
        switch = self.switch()
        self.advance(99)
        self.assertFalse(switch.due(self.sqs, "url"), "idle, but not for FR_IDLE_STOP")
        self.assertEqual(self.sqs.reads, 0, "the tag is not read before then")
        self.sqs.tags[heartbeat.BEAT_TAG] = f"{self.wall[0]:.3f} 100"  # heard at 99 s
        self.advance(2)
        self.assertFalse(switch.due(self.sqs, "url"), "idle 101 s, but heard 2 s ago")
        self.advance(5)
        self.assertFalse(switch.due(self.sqs, "url"))
        self.assertEqual(self.sqs.reads, 1, "looked at every tenth of FR_IDLE_STOP, no more often")
        self.advance(95)
        with self.assertLogs("heartbeat", "WARNING") as logged:
            self.assertTrue(switch.due(self.sqs, "url"), "idle 201 s, silent 102 s")
        self.assertIn('event=idle_stop idle="201 s" autoscaler_silent="102 s"', logged.output[0])

    def test_work_or_a_heartbeat_keeps_it_running_and_off_means_never(self):
        switch = self.switch()
        for _ in range(30):  # 300 s idle, the autoscaler heard every 10 s
            self.sqs.tags[heartbeat.BEAT_TAG] = f"{self.wall[0]:.3f} 100"
            self.advance(10)
            self.assertFalse(switch.due(self.sqs, "url"))
        self.advance(150)
        switch.worked()
        self.assertFalse(switch.due(self.sqs, "url"), "work came: idle from now")
        self.advance(101)
        self.assertTrue(switch.due(self.sqs, "url"), "no work, and silent for 251 s")
        never = heartbeat.Switch(settings.load_config({"FR_IDLE_STOP": "0"}), clock=lambda: self.clock[0])
        self.advance(10_000)
        self.assertFalse(never.due(FakeSQS(), "url"), "its own 0, and no autoscaler ever heard (an image's build host)")

    def test_a_queue_never_tagged_is_an_autoscaler_never_heard(self):
        switch = self.switch()
        self.advance(100)
        with self.assertLogs("heartbeat", "WARNING") as logged:
            self.assertTrue(switch.due(self.sqs, "url"))
        self.assertIn('autoscaler_silent="never heard"', logged.output[0])

    def test_the_beat_tags_the_queue_at_most_every_tenth_of_fr_idle_stop(self):
        self.beat.heard()
        first = self.sqs.tags[heartbeat.BEAT_TAG]
        self.advance(9)
        self.beat.heard()
        self.assertEqual(self.sqs.tags[heartbeat.BEAT_TAG], first, "not again within 10 s")
        self.advance(1)
        self.beat.heard()
        self.assertNotEqual(self.sqs.tags[heartbeat.BEAT_TAG], first)
        self.assertEqual(heartbeat.last_heard(self.sqs, "url"), (self.wall[0], 100.0))

    def test_the_autoscalers_limit_is_the_one_a_member_obeys_and_zero_is_off(self):
        switch = self.switch()  # its own FR_IDLE_STOP: 100
        self.sqs.tags[heartbeat.BEAT_TAG] = f"{self.wall[0]:.3f} 1000"
        self.advance(101)
        self.assertFalse(switch.due(self.sqs, "url"), "the autoscaler's 1000 s, not the member's 100")
        self.advance(1000)
        self.assertTrue(switch.due(self.sqs, "url"))
        off = self.switch()
        self.sqs.tags[heartbeat.BEAT_TAG] = f"{self.wall[0]:.3f} 0"
        for _ in range(20):
            self.advance(600)
            self.assertFalse(off.due(self.sqs, "url"), "off on the web host: off on every member")
        never = heartbeat.Beat(settings.load_config({"FR_IDLE_STOP": "0"}), self.sqs, "url", lambda: self.clock[0], lambda: 7.0)
        never.heard()
        self.assertEqual(self.sqs.tags[heartbeat.BEAT_TAG], "7.000 0", "beaten with the switch off too, saying so")


if __name__ == "__main__":
    unittest.main()
