import unittest

from autoscaler import desired


class DesiredTest(unittest.TestCase):
    def test_table(self):
        # (visible, in_flight, running, max) -> desired
        cases = [
            ((0, 0, 0, 15), 0, "empty: nothing runs"),
            ((0, 0, 7, 15), 0, "empty with instances up: all stop"),
            ((100, 0, 0, 15), 15, "burst from zero: capped at max"),
            ((3, 0, 0, 15), 3, "a little work: that many"),
            ((0, 4, 4, 15), 4, "in flight only: busy instances keep running"),
            ((0, 4, 10, 15), 4, "in flight only: idle ones stop"),
            ((2, 3, 15, 15), 15, "messages waiting: no running instance stops"),
            ((2, 3, 20, 15), 15, "more running than max: back to max"),
            ((40, 40, 15, 15), 15, "max cap"),
            ((5, 0, 5, 15), 5, "pending starts count as running: no more to start"),
            ((1, 0, 0, 1), 1, "a pool of one"),
        ]
        for args, expected, why in cases:
            with self.subTest(why, args=args):
                self.assertEqual(desired(*args), expected)


if __name__ == "__main__":
    unittest.main()
