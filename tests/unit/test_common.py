import json
import re
import unittest
import uuid

import common
from core import settings
from core.messages import DEADLINE, DEADLINE_BYTES, MAX_MESSAGE_BYTES, Reply, Request, as_face, decode, encode
from core.settings import Config, ConfigError, load_config
from model.recognizer import MAX_FACES
from webtier.refusals import Refusal
from webtier.results import MAX_NAME_CHARS


class ConfigTest(unittest.TestCase):
    def test_defaults_name_the_resources_from_the_prefix(self):
        config = load_config({})
        self.assertEqual((config.port, config.max_instances, config.endpoint_url), (8000, 15, None))
        self.assertEqual(
            (config.in_bucket, config.out_bucket, config.request_queue, config.response_queue),
            ("face-rec-in-bucket", "face-rec-out-bucket", "face-rec-req-queue", "face-rec-resp-queue"),
        )

    def test_values_are_parsed_and_relative_paths_are_from_the_project(self):
        config = load_config(
            {
                "FR_PREFIX": "t1",
                "FR_PORT": "0",
                "FR_REQUEST_TIMEOUT": "2.5",
                "FR_WEIGHTS": "w.pt",
                "FR_ENDPOINT_URL": "http://127.0.0.1:5000",
            }
        )
        self.assertEqual((config.request_queue, config.port, config.request_timeout), ("t1-req-queue", 0, 2.5))
        self.assertEqual(config.weights, settings.PROJECT_DIR / "w.pt")
        self.assertEqual(config.endpoint_url, "http://127.0.0.1:5000")

    def test_a_bad_value_names_the_variable(self):
        for name, value in [
            ("FR_PORT", "80000"),
            ("FR_PORT", "http"),
            ("FR_PREFIX", "Has_Upper"),
            ("FR_REQUEST_TIMEOUT", "0"),
            ("FR_POLL_WAIT", "21"),
            ("FR_MAX_INSTANCES", "-1"),
            ("FR_LOG_LEVEL", "loud"),
            ("FR_PORTT", "1"),
        ]:
            with self.subTest(name=name, value=value):
                with self.assertRaisesRegex(ConfigError, name):
                    load_config({name: value})

    def test_a_bad_value_stops_the_process_with_exit_78(self):
        with self.assertRaises(SystemExit) as caught:
            settings.load_config_or_exit({"FR_PORT": "x"})
        self.assertEqual(caught.exception.code, 78)

    def test_config_is_frozen(self):
        with self.assertRaises(AttributeError):
            Config().port = 1

    def test_every_path_and_name_in_the_readmes_where_to_change_what_is_in_the_tree(self):
        readme = (settings.PROJECT_DIR / "README.md").read_text()
        table = readme[readme.index("## Where to change what") : readme.index("## Limits")]
        rows = [line.split(" | ", 1)[1] for line in table.splitlines() if line.startswith("| ") and " | `" in line]
        self.assertGreater(len(rows), 30)
        for row in rows:
            # Backticked files and folders, each followed by the backticked names said to be in them.
            for path, names in re.findall(r"`([\w./-]+(?:\.py|/|\.sh|\.toml|\.conf))`((?:[^`|]|`[^`/]+`)*)", row):
                with self.subTest(path=path):
                    target = settings.PROJECT_DIR / path
                    self.assertTrue(target.exists(), f"{path} is not in the tree")
                    if target.suffix == ".py":
                        for name in re.findall(r"`(\w+)`", names):
                            found = re.search(rf"(?m)^\s*(def|class) {name}\b|^{name} = ", target.read_text())
                            self.assertTrue(found, f"{name} is not in {path}")

    def test_the_readmes_configuration_table_names_every_variable_with_its_default(self):
        rows = re.findall(r"^\| `(FR_\w+)` \| ([^|]*) \|", (settings.PROJECT_DIR / "README.md").read_text(), re.M)
        self.assertEqual(sorted(name for name, _ in rows), sorted(settings.variables()))
        default = Config()
        for name, cell in rows:
            with self.subTest(variable=name, readme=cell):
                field = next(f for n, (f, _) in settings._VARIABLES.items() if n == name)
                value = re.match(r"`([^`]*)`", cell.strip())
                if value:  # the default, as the variable would be set
                    self.assertEqual(getattr(load_config({name: value[1]}), field), getattr(default, field))
                else:  # "unset", or derived ("as ..."): no value of its own
                    self.assertIn(getattr(default, field), (None, ""))


class RefusalTest(unittest.TestCase):
    def test_every_error_a_client_can_get_carries_its_status_and_one_line_reason(self):
        from web import HttpError
        from webtier.formdata import MultipartError, NotMultipart
        from webtier.httpguards import BadHeaderLine
        from webtier.uploads import GaveUp, NoAnswer, NotRecognized

        table = [
            (MultipartError("bad boundary line"), 400, True),
            (NotMultipart("not multipart"), 415, True),
            (HttpError("Content-Length required", 411), 411, True),
            (HttpError("bad Content-Length"), 400, True),
            (BadHeaderLine("a header line without a colon"), 400, False),
            (NoAnswer("no answer"), 504, False),
            (GaveUp("the workers failed"), 502, False),
            (NotRecognized("no face"), 422, False),
        ]
        for refusal, status, unread in table:
            with self.subTest(refusal=type(refusal).__name__):
                self.assertIsInstance(refusal, Refusal)
                self.assertEqual((refusal.status, refusal.unread_input), (status, unread))
                self.assertEqual(refusal.reason, str(refusal))

    def test_the_security_docs_error_table_names_every_status_the_web_tier_answers_and_no_other(self):
        # The statuses in the code: answered directly, raised as a Refusal (a class's or given),
        # http.server's own errors (OWN_ERRORS), the accepting thread's 503; and 100 Continue.
        from webtier.connection import OWN_ERRORS

        code = "".join(p.read_text() for p in [settings.PROJECT_DIR / "web.py", *(settings.PROJECT_DIR / "webtier").glob("*.py")])
        answered = re.findall(r"(?:send_text|answer_if_unanswered|send_error)\((\d{3})", code)
        raised = re.findall(r"(?:Error|Refusal|Refused)\(.*, (\d{3})\)$|^    status = (\d{3})$|HTTP/1\.1 (\d{3}) ", code, re.M)
        found = {int(s) for s in answered + [n for group in raised for n in group if n]} | set(OWN_ERRORS)
        statuses = {s for s in found if s >= 400} | {100}
        table = (settings.PROJECT_DIR / "docs/security.md").read_text().split("## Errors a client can get")[1].split("\n## ")[0]
        documented = {int(n) for row in re.findall(r"^\| ([\d /]+) \|", table, re.M) for n in row.split("/")}
        self.assertEqual(documented, statuses)


class MessageTest(unittest.TestCase):
    def test_request_and_reply_round_trip(self):
        request = Request(uuid.uuid4().hex, "id/test_00.jpg", "test_00", "http://q/resp")
        self.assertEqual(decode(Request, encode(request)), request)
        for reply in (Reply("i", "test_00", name="Paul"), Reply("i", "x", error="no face found")):
            self.assertEqual(decode(Reply, encode(reply)), reply)

    def test_a_field_a_newer_sender_adds_is_left_out(self):
        request = Request("i", "i/test_00.jpg", "test_00", "http://q/resp")
        newer = encode(request)[:-1] + ',"priority":"high"}'
        self.assertEqual(decode(Request, newer), request)

    def test_a_request_is_dropped_once_its_client_stopped_waiting_by_its_deadline_or_else_its_age(self):
        from worker import CLOCK_MARGIN, to_answer

        now = 1_800_000_000.0
        body = encode(Request("i", "i/test_00.jpg", "test_00", "http://q/resp"))

        def message(sent_ago, deadline_in):
            m = {"Body": body, "Attributes": {} if sent_ago is None else {"SentTimestamp": str(int((now - sent_ago) * 1000))}}
            if deadline_in is not None:
                m["MessageAttributes"] = {DEADLINE: {"DataType": "Number", "StringValue": str(int((now + deadline_in) * 1000))}}
            return m

        # (seconds since SQS took it, seconds its client still waits) -> answered; the worker's timeout is 120 s
        cases = [
            ((1, 119), True, "fresh"),
            ((1, -CLOCK_MARGIN - 1), False, "its web tier's deadline passed, though sent just now"),
            ((300, 60), True, "a web tier that waits longer than this worker's timeout"),
            ((120 + CLOCK_MARGIN + 1, None), False, "no deadline (an older web tier): its age decides"),
            ((120, None), True, "no deadline, not yet older than the timeout"),
            ((None, None), True, "neither said: answered"),
        ]
        for (sent_ago, deadline_in), answered, why in cases:
            with self.subTest(why):
                jobs, dropped = to_answer([message(sent_ago, deadline_in)], 120, now=lambda: now)
                self.assertEqual((len(jobs), len(dropped)), (1, 0) if answered else (0, 1))

    def test_the_largest_request_the_web_tier_makes_fits_the_queue_limit(self):
        queue_url = "https://sqs.ap-southeast-2.amazonaws.com/123456789012/" + "p" * 40 + "-resp-queue"
        request = Request(uuid.uuid4().hex, uuid.uuid4().hex + "/" + "s" * 100 + ".jpeg", "s" * 100, queue_url)
        self.assertLessEqual(len(encode(request).encode()) + DEADLINE_BYTES, MAX_MESSAGE_BYTES)

    def test_the_largest_reply_a_worker_makes_fits_the_response_queue(self):
        name = "n" * MAX_NAME_CHARS
        faces = [as_face((10_000, 10_000, 10_000, 10_000), 0.123456, name, 1.23456789e-7)] * MAX_FACES
        reply = Reply(uuid.uuid4().hex, "s" * 100, name=name, distance=1e-7, faces=faces, model_ms="12345.6", model="f" * 64)
        self.assertEqual(decode(Reply, encode(reply)), reply)

    def test_a_reply_names_its_faces_in_the_form_the_web_tier_reads(self):
        face = as_face((1, 2, 3, 4), 0.99, "Paul", 0.5)
        good = {"id": "i", "stem": "s", "name": "Paul", "distance": 0.5, "faces": [face]}
        self.assertEqual(decode(Reply, json.dumps(good)).faces, [face])
        for why, faces in {
            "a box of three": [dict(face, box=[1, 2, 3])],
            "a box of text": [dict(face, box=["1", 2, 3, 4])],
            "no distance": [{k: v for k, v in face.items() if k != "distance"}],
            "a name not text": [dict(face, name=7)],
            "a probability true": [dict(face, probability=True)],
            "not a list": {"box": [1, 2, 3, 4]},
        }.items():
            with self.subTest(why), self.assertRaises(ValueError):
                decode(Reply, json.dumps(dict(good, faces=faces)))
        with self.assertRaises(ValueError):
            decode(Reply, json.dumps(dict(good, distance="0.5")))

    def test_a_message_over_1_kb_is_refused_before_sending(self):
        with self.assertRaisesRegex(ValueError, r"exceeds 997 \(1024 with its attributes\)"):
            encode(Request("i", "k" * 1100, "n", "q"))

    def test_malformed_messages_are_value_errors(self):
        for kind, body in [
            (Request, "not json"),
            (Request, '{"id": "x"}'),
            (Request, "[1]"),
            (Reply, '{"id": "i", "name": "n"}'),
            (Reply, '{"id": "i", "name": "n", "result": "a", "error": "b"}'),
            (Request, '{"id": 1, "key": "k", "name": "n", "reply_to": "q"}'),
        ]:
            with self.subTest(body=body):
                with self.assertRaises(ValueError):
                    decode(kind, body)


class EventLogTest(unittest.TestCase):
    def test_one_line_per_event_with_values_quoted_where_logfmt_needs_it(self):
        log = common.EventLog("test")
        with self.assertLogs("test", "INFO") as logged:
            log.info("failed", id="a1", error='no such key: "x y"\nsecond line', empty="", count=3)
        self.assertEqual(
            logged.records[0].getMessage(), 'event=failed id=a1 error="no such key: \\"x y\\"\\nsecond line" empty="" count=3'
        )

    def test_a_level_not_enabled_formats_nothing(self):
        class Loud:
            def __str__(self):
                raise AssertionError("formatted")

        with self.assertLogs("test", "INFO"):
            common.EventLog("test").debug("quiet", value=Loud())
            common.EventLog("test").info("said")


if __name__ == "__main__":
    unittest.main()
