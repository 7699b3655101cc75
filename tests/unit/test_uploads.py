import unittest

from webtier.uploads import upload_key


class UploadKeyTest(unittest.TestCase):
    def test_keys_are_ours_and_stems_are_safe(self):
        cases = {
            "test_00.jpg": ("test_00", "id/test_00.jpg"),
            "../../etc/passwd": ("passwd", "id/passwd"),
            "C:\\photos\\me.JPEG": ("me", "id/me.jpeg"),
            "nul\x00byte.png": ("nul_byte", "id/nul_byte.png"),
            "Zoë face.jpg": ("Zo__face", "id/Zo__face.jpg"),
            ".hidden": ("upload", "id/upload"),
            "": ("upload", "id/upload"),
            None: ("upload", "id/upload"),
            "a" * 300 + ".jpg": ("a" * 100, "id/" + "a" * 100 + ".jpg"),
            "odd.ext/ension": ("ension", "id/ension"),
        }
        for filename, expected in cases.items():
            with self.subTest(filename=filename):
                self.assertEqual(upload_key("id", filename), expected)


if __name__ == "__main__":
    unittest.main()
