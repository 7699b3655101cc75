import unittest

from autoscaler import desired


class DesiredTest(unittest.TestCase):
    def test_table(self):
        # (visible, in_flight, running, max[, idle seconds, grace]) -> desired
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
            ((0, 0, 3, 15, 0.2, 0.5), 3, "work gone for less than the grace: keep them"),
            ((0, 0, 3, 15, 0.5, 0.5), 0, "work gone for the grace: stop them all"),
            ((0, 0, 20, 15, 0.1, 0.5), 15, "within the grace, still never more than max"),
            ((0, 1, 3, 15, 0.0, 0.5), 1, "the grace is only for no work at all"),
        ]
        for args, expected, why in cases:
            with self.subTest(why, args=args):
                self.assertEqual(desired(*args), expected)


if __name__ == "__main__":
    unittest.main()
