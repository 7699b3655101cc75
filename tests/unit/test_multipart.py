import io
import time
import unittest

from tests.support import multipart
from webtier.formdata import MultipartError, MultipartParser, boundary_of

BOUNDARY = "----bnd42"


def parse(body, chunk=None, boundary=BOUNDARY, **limits):
    parser = MultipartParser(boundary.encode(), **limits)
    step = chunk or len(body) or 1
    for at in range(0, len(body), step):
        parser.feed(body[at : at + step])
    return parser.close()


def contents(part):
    part.body.seek(0)
    return part.body.read()


class MultipartParserTest(unittest.TestCase):
    def test_the_caller_decides_where_part_bodies_go(self):
        _, body = multipart([("note", None, b"hello"), ("inputFile", "a.jpg", b"\xff\xd8jpeg")], BOUNDARY)
        made = []
        parser = MultipartParser(BOUNDARY.encode(), new_body=lambda part: made.append(io.BytesIO()) or made[-1])
        parser.feed(body)
        parts = parser.close()
        self.assertEqual([part.body for part in parts], made)
        self.assertEqual([b.getvalue() for b in made], [b"hello", b"\xff\xd8jpeg"])

    def test_parts_are_split_with_names_filenames_and_exact_bytes(self):
        image = bytes(range(256)) * 40 + b"\r\n--" + b"----bnd4"  # looks like a boundary, is not
        _, body = multipart([("note", None, b"hello"), ("inputFile", "test_00.jpg", image)], BOUNDARY)
        parts = parse(body)
        self.assertEqual([(p.name, p.filename) for p in parts], [("note", None), ("inputFile", "test_00.jpg")])
        self.assertEqual(contents(parts[0]), b"hello")
        self.assertEqual(contents(parts[1]), image)
        self.assertEqual(parts[1].size, len(image))

    def test_any_split_of_the_body_into_chunks_gives_the_same_parts(self):
        image = b"\xff\xd8" + b"x\r\n-" * 50 + b"\xff\xd9"
        _, body = multipart([("inputFile", "a.jpg", image)], BOUNDARY)
        for chunk in range(1, 40):
            with self.subTest(chunk=chunk):
                parts = parse(body, chunk)
                self.assertEqual(contents(parts[0]), image)

    def test_preamble_epilogue_and_an_empty_part_header_block_are_accepted(self):
        body = b"preamble\r\n--" + BOUNDARY.encode() + b"\r\n\r\nno headers\r\n--" + BOUNDARY.encode() + b"--\r\nepilogue"
        parts = parse(body)
        self.assertEqual((parts[0].name, contents(parts[0])), (None, b"no headers"))

    def test_quoted_and_escaped_filenames_are_read(self):
        body = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="inputFile"; filename="a \\"b\\"; c.jpg"'
            f"\r\n\r\nx\r\n--{BOUNDARY}--\r\n"
        ).encode()
        self.assertEqual(parse(body)[0].filename, 'a "b"; c.jpg')

    def test_rfc_2231_file_names_are_read(self):
        body = (
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"inputFile\"; filename*=UTF-8''Zo%C3%AB.jpg"
            f"\r\n\r\nx\r\n--{BOUNDARY}--\r\n"
        ).encode()
        self.assertEqual(parse(body)[0].filename, "Zoë.jpg")

    def test_a_disposition_built_to_be_slow_to_parse_is_refused_at_once(self):
        disposition = 'form-data; name="inputFile"; filename="' + ";" * 60000
        body = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode()
        started = time.process_time()
        with self.assertRaisesRegex(MultipartError, "Content-Disposition header too long"):
            parse(body, max_header_bytes=100_000)
        self.assertLess(time.process_time() - started, 0.2, "CPU seconds")

    def test_malformed_bodies_are_400_with_a_reason(self):
        _, good = multipart([("inputFile", "a.jpg", b"data")], BOUNDARY)
        cases = {
            "truncated": good[: len(good) // 2],
            "no closing boundary": good.replace(f"--{BOUNDARY}--".encode(), b""),
            "no boundary at all": b"just some bytes",
            "garbage after boundary": f"--{BOUNDARY}xx\r\n".encode(),
            "header without colon": f"--{BOUNDARY}\r\nnonsense\r\n\r\nx\r\n--{BOUNDARY}--".encode(),
            "huge part headers": f"--{BOUNDARY}\r\nX: {'a' * 20000}".encode(),
            "huge part headers, whole": f"--{BOUNDARY}\r\nX: {'a' * 20000}\r\n\r\nx\r\n--{BOUNDARY}--".encode(),
            "many part headers, whole": (
                f"--{BOUNDARY}\r\n" + "X: aaaaaaaaaaaaaaaaaaaaaaa\r\n" * 2000 + f"\r\nx\r\n--{BOUNDARY}--"
            ).encode(),
        }
        for name, body in cases.items():
            with self.subTest(name):
                with self.assertRaises(MultipartError) as caught:
                    parse(body)
                self.assertEqual(caught.exception.status, 400)
                self.assertNotIn("\n", caught.exception.reason)

    def test_too_many_parts_is_400(self):
        _, body = multipart([("f", None, b"x")] * 17, BOUNDARY)
        with self.assertRaises(MultipartError) as caught:
            parse(body)
        self.assertEqual(caught.exception.status, 400)


class BoundaryTest(unittest.TestCase):
    def test_boundary_is_taken_from_the_content_type(self):
        self.assertEqual(boundary_of('multipart/form-data; boundary="a b"'), b"a b")
        self.assertEqual(boundary_of("Multipart/Form-Data; boundary=xyz"), b"xyz")

    def test_other_content_types_are_415_and_a_missing_boundary_400(self):
        for value, status in [
            (None, 415),
            ("", 415),
            ("image/jpeg", 415),
            ("application/json", 415),
            ("multipart/form-data", 400),
            ("multipart/form-data; boundary=" + "b" * 71, 400),
        ]:
            with self.subTest(value=value):
                with self.assertRaises(MultipartError) as caught:
                    boundary_of(value)
                self.assertEqual(caught.exception.status, status)

    def test_a_content_type_built_to_be_slow_to_parse_is_refused_at_once(self):
        started = time.process_time()
        with self.assertRaisesRegex(MultipartError, "Content-Type header too long") as caught:
            boundary_of('multipart/form-data; boundary=x; a="' + ";" * 60000)
        self.assertLess(time.process_time() - started, 0.2, "CPU seconds")
        self.assertEqual(caught.exception.status, 400)


if __name__ == "__main__":
    unittest.main()
