"""How the web tier words an answer: strangers past FR_MATCH_THRESHOLD, and which uploads want JSON
(no process; through the web tier: tests/stack/test_faces.py)."""

import unittest
from email.message import Message

from web import answers_json
from webtier.uploads import UNKNOWN, Answer, named


def headers(*accept):
    message = Message()
    for value in accept:
        message["Accept"] = value
    return message


class AnswerTest(unittest.TestCase):
    def test_a_face_farther_than_the_threshold_or_of_no_known_distance_is_unknown(self):
        cases = [
            (("Paul", 0.5, None), "Paul", "no threshold: the nearest names it, as the course's model"),
            (("Paul", None, None), "Paul", "no threshold, no distance"),
            (("Paul", 0.5, 0.5), "Paul", "at the threshold"),
            (("Paul", 0.51, 0.5), UNKNOWN, "past it"),
            (("Paul", None, 0.5), UNKNOWN, "a distance not said (an older worker's, an older item's)"),
        ]
        for args, name, why in cases:
            with self.subTest(why):
                self.assertEqual(named(*args), name)

    def test_the_text_answer_is_the_courses_and_json_says_every_face(self):
        face = {"box": [1, 2, 3, 4], "probability": 0.99, "name": "Paul", "distance": 0.1}
        answer = Answer("test_00", "Paul", [face], "12.5")
        self.assertEqual(answer.text(), "test_00:Paul")
        self.assertEqual(answer.json(), {"file": "test_00", "name": "Paul", "faces": [face]})

    def test_json_is_asked_for_by_the_query_or_else_by_naming_it_in_accept(self):
        cases = [
            ("/", headers(), False),
            ("/", headers("*/*"), False),
            ("/", headers("application/json"), True),
            ("/", headers("text/html, Application/JSON;q=0.5"), True),
            ("/", headers("text/plain", "application/json"), True),
            ("/", headers("application/jsonp"), False),
            ("/?format=json", headers(), True),
            ("/?format=text", headers("application/json"), False),
            ("/?format=json", None, True),
        ]
        for path, accept, wanted in cases:
            with self.subTest(path=path, accept=accept and accept.get_all("Accept")):
                self.assertEqual(answers_json(path, accept), wanted)


if __name__ == "__main__":
    unittest.main()
