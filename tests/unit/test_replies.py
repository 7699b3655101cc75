"""webtier/replies.py on its own (no process): the table of waiting requests, and dead letters reported once."""

import threading
import unittest

from core import settings
from core.messages import Reply, Request, encode
from webtier.replies import DeadLettered, Pending, Replies


class DeadLetterTest(unittest.TestCase):
    def test_a_dead_letter_read_again_is_reported_once(self):
        class Queue:
            def change_message_visibility_batch(self, QueueUrl, Entries):
                return {"Successful": [{"Id": entry["Id"]} for entry in Entries]}

        replies = Replies(settings.load_config({}), Queue(), "reply-url", "dead-letter-url")
        message = {"MessageId": "m1", "ReceiptHandle": "r1", "Body": encode(Request("a", "a/x.jpg", "x", "q"))}
        with replies.waiting("a") as slot, self.assertLogs("web", "INFO") as logged:
            replies._take_dead_letters([message])
            replies._take_dead_letters([dict(message, ReceiptHandle="r2")])
        self.assertEqual(slot.outcome, DeadLettered("a"))
        errors = [line for line in logged.output if line.startswith("ERROR")]
        self.assertEqual(len(errors), 1, logged.output)
        self.assertTrue(any("event=dead_letter_again id=a" in line for line in logged.output))


class PendingTest(unittest.TestCase):
    def test_a_duplicate_or_unknown_reply_is_ignored(self):
        pending = Pending()
        slot = pending.register("a")
        self.assertTrue(pending.deliver("a", Reply("a", "n", name="Paul")))
        self.assertFalse(pending.deliver("a", Reply("a", "n", name="Bob")), "duplicate delivery")
        self.assertEqual(slot.outcome.name, "Paul")
        self.assertFalse(pending.deliver("b", Reply("b", "n", name="Paul")), "nobody waits for b")
        pending.remove("a")
        self.assertFalse(pending.deliver("a", Reply("a", "n", name="Paul")))
        self.assertEqual(len(pending), 0)

    def test_many_threads_get_their_own_outcomes(self):
        pending = Pending()
        slots = {str(n): pending.register(str(n)) for n in range(200)}
        threads = [threading.Thread(target=pending.deliver, args=(i, Reply(i, "n", name=i))) for i in slots]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual({i: s.outcome.name for i, s in slots.items()}, {i: i for i in slots})


if __name__ == "__main__":
    unittest.main()
