import json
import tempfile
import time
import unittest
from pathlib import Path

from core import settings, statefiles


class WaitingCountTest(unittest.TestCase):
    def test_a_count_file_too_old_or_dated_ahead_of_the_clock_says_its_web_tier_waits_on_nothing(self):
        with tempfile.TemporaryDirectory() as state:
            config = settings.load_config({"FR_STATE_DIR": state})
            self.assertIsNone(statefiles.read_waiting(config), "no web tier here: no count at all")
            statefiles.write_waiting(config, 3, 1)
            self.assertEqual(statefiles.read_waiting(config), (3, 1))
            for offset, believed in ((-statefiles.WEB_STATE_MAX_AGE - 1, False), (0.5, True), (3600, False)):
                with self.subTest(seconds_ahead=offset):
                    (Path(state) / statefiles.WEB_STATE).write_text(
                        json.dumps({"waiting": 3, "long_queued": 1, "at": time.time() + offset})
                    )
                    self.assertEqual(statefiles.read_waiting(config), (3, 1) if believed else (0, 0))


if __name__ == "__main__":
    unittest.main()
