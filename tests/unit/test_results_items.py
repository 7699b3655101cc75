"""The results table's items and their checks alone (webtier/results.py), in-process; through the web tier
and a worker: tests/stack/test_results.py."""

import tempfile
import unittest
from pathlib import Path
from unittest import mock

from core.messages import Reply, encode
from webtier import results

MODEL = "m" * 64


class FakeModel:
    def fingerprint(self):
        return MODEL


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class ItemTest(unittest.TestCase):
    """What counts as an answer, the model's fingerprint, and errors as misses (no process)."""

    def test_only_an_item_for_the_same_bytes_and_model_with_a_name_answers(self):
        good = results.item("x", "s" * 64, "Paul", 0.25, MODEL)
        self.assertEqual(results.answer_of(good, "s" * 64, MODEL), ("Paul", 0.25))
        older = {k: v for k, v in good.items() if k != "distance"}
        self.assertEqual(results.answer_of(older, "s" * 64, MODEL), ("Paul", None))
        for odd in ({"S": "0.25"}, {"N": "-1"}, {"N": "nan"}, {"N": "x"}):
            with self.subTest(distance=odd):
                self.assertEqual(results.answer_of(dict(good, distance=odd), "s" * 64, MODEL), ("Paul", None))
        misses = {
            "no item": None,
            "other bytes": results.item("x", "t" * 64, "Paul", 0.25, MODEL),
            "other model": results.item("x", "s" * 64, "Paul", 0.25, "n" * 64),
            "name a number": dict(good, name={"N": "7"}),
            "no name": {k: v for k, v in good.items() if k != "name"},
            "no model": {k: v for k, v in good.items() if k != "model"},
            "empty name": dict(good, name={"S": ""}),
            "a line break in the name": dict(good, name={"S": "Paul\nX-Injected: 1"}),
            "a name too long": dict(good, name={"S": "P" * 201}),
            "not a map": dict(good, sha256="s" * 64),
            "not an item": ["Paul"],
        }
        for why, found in misses.items():
            with self.subTest(why):
                self.assertIsNone(results.answer_of(found, "s" * 64, MODEL))

    def test_the_fingerprint_changes_with_the_weights_or_the_gallery_and_the_weights_are_hashed_again_only_then(self):
        with tempfile.TemporaryDirectory() as scratch:
            weights = Path(scratch, "w.pt")
            weights.write_bytes(b"weights")
            gallery = ["g" * 64]
            configured = results.ConfiguredModel(weights, lambda: gallery[0])
            with mock.patch.object(results, "file_sha256", wraps=results.file_sha256) as hashed:
                first = configured.fingerprint()
                self.assertEqual(configured.fingerprint(), first)
                self.assertEqual(hashed.call_count, 1, "hashed again with nothing changed")
                gallery[0] = "h" * 64  # a person added
                second = configured.fingerprint()
                self.assertEqual(hashed.call_count, 1, "the weights hashed again for a change of the gallery")
                weights.write_bytes(b"weights, trained again")
                third = configured.fingerprint()
            self.assertEqual(len({first, second, third}), 3)
            self.assertEqual(third, results.fingerprint(results.file_sha256(weights), "h" * 64))
            weights.unlink()
            with self.assertRaises(OSError):
                configured.fingerprint()

    def test_a_reply_with_the_longest_stem_and_a_fingerprint_fits_a_message(self):
        self.assertLess(len(encode(Reply("a" * 32, "s" * 100, name="N" * 50, model_ms="1234.5", model=MODEL))), 1024)

    def stubbed(self):
        import boto3
        from botocore.stub import Stubber

        dynamodb = boto3.client("dynamodb", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
        stub = Stubber(dynamodb)
        stub.activate()
        clock = Clock()
        return results.ResultsTable(dynamodb, "t", FakeModel(), clock), stub, clock

    def test_a_table_refusing_is_a_miss_one_log_line_and_left_alone_for_a_while(self):
        table, stub, clock = self.stubbed()
        stub.add_client_error("get_item", "ProvisionedThroughputExceededException", http_status_code=400)
        stub.add_client_error("put_item", "ThrottlingException", http_status_code=400)
        stub.add_response("get_item", {"Item": results.item("x", "s" * 64, "Paul", 0.25, MODEL)})
        with self.assertLogs("results", "WARNING") as logged:
            self.assertIsNone(table.lookup("x", "s" * 64))
            # Resting: asked nothing (the stub would answer the next call with the put's error).
            self.assertIsNone(table.lookup("x", "s" * 64))
            table.record("x", "s" * 64, "Paul", 0.25, MODEL)
            clock.now += results.TABLE_REST
            table.record("x", "s" * 64, "Paul", 0.25, MODEL)
            clock.now += results.TABLE_REST
            self.assertEqual(table.lookup("x", "s" * 64), ("Paul", 0.25))
        self.assertEqual(len(logged.output), 2, logged.output)
        self.assertIn("ProvisionedThroughputExceededException", logged.output[0])
        self.assertIn("ThrottlingException", logged.output[1])
        stub.assert_no_pending_responses()
        self.assertEqual(table.hits, 1)

    def test_a_missing_table_is_a_miss(self):
        table, stub, _ = self.stubbed()
        stub.add_client_error("get_item", "ResourceNotFoundException", http_status_code=400)
        with self.assertLogs("results", "WARNING"):
            self.assertIsNone(table.lookup("x", "s" * 64))


if __name__ == "__main__":
    unittest.main()
