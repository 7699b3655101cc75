"""The browser page, /status and /metrics, on the whole local stack (web, autoscaler, launcher).

The page is driven in headless Chromium through chromedriver's W3C WebDriver API: plain JSON over
HTTP, so the standard library's urllib is the whole client (the DevTools protocol would need a
WebSocket client). Debian's `chromium` and `chromium-driver` are installed by `./setup.sh test`.
"""

import base64
import json
import os
import re
import shutil
import socket
import tempfile
import unittest
import urllib.request
from pathlib import Path

from tests.support import (
    IMAGES,
    aws,
    burst,
    child_env,
    expected_answers,
    image_bytes,
    request,
    running_instances,
    start,
    start_local_stack,
    upload,
    wait_until,
)

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"
# 15 members that may run and as many spares (FR_SPARE_INSTANCES's default).
POOL_SIZE = 30


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDriver:
    """The few WebDriver commands the test needs."""

    def __init__(self, base):
        self.base = base
        self.session = None

    def call(self, method, path, payload=None):
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as response:
            return json.loads(response.read())["value"]

    def open(self, profile_dir):
        options = {"binary": shutil.which("chromium"), "args": CHROMIUM_FLAGS + [f"--user-data-dir={profile_dir}"]}
        value = self.call("POST", "/session", {"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}})
        self.session = f"/session/{value['sessionId']}"

    def close(self):
        if self.session:
            self.call("DELETE", self.session)

    def go(self, url):
        self.call("POST", f"{self.session}/url", {"url": url})

    def find(self, css):
        """Texts of the elements matching `css`, read in one script (the page may redraw a list between
        two WebDriver calls, and an element it replaced is stale)."""
        script = "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText ?? e.textContent)"
        return self.call("POST", f"{self.session}/execute/sync", {"script": script, "args": [css]})

    def attribute(self, css, name):
        """Attribute `name` of the first element matching `css` (None when it has none)."""
        element = self.call("POST", f"{self.session}/element", {"using": "css selector", "value": css})
        return self.call("GET", f"{self.session}/element/{element[ELEMENT]}/attribute/{name}")

    def type_into(self, css, text):
        element = self.call("POST", f"{self.session}/element", {"using": "css selector", "value": css})
        self.call("POST", f"{self.session}/element/{element[ELEMENT]}/value", {"text": text})

    def clear(self, css):
        element = self.call("POST", f"{self.session}/element", {"using": "css selector", "value": css})
        self.call("POST", f"{self.session}/element/{element[ELEMENT]}/clear", {})

    def click(self, css, nth=0):
        found = self.call("POST", f"{self.session}/elements", {"using": "css selector", "value": css})
        self.call("POST", f"{self.session}/element/{found[nth][ELEMENT]}/click", {})

    def screenshot(self, path):
        """A PNG of the page (for a person to look at; the tests check the page's elements)."""
        Path(path).write_bytes(base64.b64decode(self.call("GET", f"{self.session}/screenshot")))


def metrics(text):
    """{'name{labels}': value} of Prometheus text, checking every line is well formed."""
    values = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.fullmatch(r"# (HELP|TYPE) face_rec_\w+ .+", line), line
            continue
        match = re.fullmatch(r'(face_rec_\w+(?:\{[a-z_]+="[^"]*"(?:,[a-z_]+="[^"]*")*\})?) (\S+)', line)
        assert match, line
        values[match[1]] = float(match[2])
    return values


class PagesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.state_dir = tempfile.TemporaryDirectory()
        cls.addClassCleanup(cls.state_dir.cleanup)
        _, cls.url, cls.endpoint = start_local_stack(cls, "pages", cls.state_dir.name)
        cls.ec2 = aws(cls.endpoint, "ec2")

    def status(self):
        code, body = request(self.url + "status?format=json", "GET")
        self.assertEqual(code, 200)
        return json.loads(body)

    def test_status_and_metrics_count_a_known_workload(self):
        before = self.status()["web"]
        for stem in ("test_00", "test_01", "test_02"):
            self.assertEqual(upload(self.url, f"{stem}.jpg", (IMAGES / f"{stem}.jpg").read_bytes())[0], 200)
        self.assertEqual(upload(self.url, "blank.jpg", image_bytes((64, 64)))[0], 422)
        wait_until(lambda: running_instances(self.ec2) == 0, 5, what="scaled in")
        # The autoscaler's decision and the depths are read at most once a second; SQS's counts trail
        # the truth (by 3 s on the AWS-like stack here) and stopped instances pass through `stopping`.
        idle = {"visible": 0, "in_flight": 0}
        status = wait_until(
            lambda: (
                (s := self.status())["autoscaler"]
                and s["autoscaler"]["running"] == 0
                and s["app_instances"]["stopped"] == POOL_SIZE
                and s["queues"]["request"] == idle
                and s
            ),
            10,
            interval=0.3,
            what="status settles",
        )
        web = status["web"]
        self.assertEqual(web["answered"] - before["answered"], 3)
        self.assertEqual(web["errors"].get("422", 0) - before["errors"].get("422", 0), 1)
        self.assertEqual(web["in_flight"], 0)
        self.assertGreater(web["latency_p95_s"], 0)
        self.assertEqual(status["queues"]["dead_letter"], {"visible": 0, "in_flight": 0})
        self.assertEqual(status["app_instances"], {"pending": 0, "running": 0, "stopping": 0, "stopped": POOL_SIZE})
        self.assertEqual(status["autoscaler"]["desired"], 0)
        self.assertIsNone(status["error"])

        code, text = request(self.url + "metrics", "GET")
        self.assertEqual(code, 200)
        values = metrics(text)
        self.assertEqual(values['face_rec_requests_total{status="200"}'], web["answered"])
        self.assertEqual(values['face_rec_requests_total{status="422"}'], web["errors"]["422"])
        self.assertEqual(values["face_rec_request_latency_seconds_count"], web["answered"])
        self.assertEqual(values['face_rec_app_instances{state="stopped"}'], POOL_SIZE)
        self.assertEqual(values['face_rec_queue_messages{queue="request",state="visible"}'], 0)
        self.assertEqual(values["face_rec_autoscaler_desired_instances"], 0)
        self.assertEqual(values["face_rec_aws_up"], 1)

        code, page = request(self.url + "status", "GET")
        self.assertEqual(code, 200)
        self.assertIn("status?format=json", page)

    def test_the_page_has_no_external_assets(self):
        code, page = request(self.url, "GET")
        self.assertEqual(code, 200)
        self.assertIn('<input id="pick" type="file"', page)
        self.assertNotRegex(page, r'(src|href)="(https?:)?//')

    def browser(self):
        """A headless Chromium session, closed at cleanup (the test is skipped without Chromium)."""
        if not (shutil.which("chromium") and shutil.which("chromedriver")):
            self.skipTest("chromium and chromedriver not installed (./setup.sh test installs them)")
        port = free_port()
        start(
            type(self),
            f"chromedriver-{port}",
            ["chromedriver", f"--port={port}"],
            child_env(),
            r"ChromeDriver was started successfully",
        )
        driver = WebDriver(f"http://127.0.0.1:{port}")
        profile = tempfile.TemporaryDirectory()
        self.addCleanup(profile.cleanup)
        driver.open(profile.name)
        self.addCleanup(driver.close)
        return driver

    def test_the_status_chart_shows_instances_rising_to_the_bursts_peak_and_back_to_0(self):
        driver = self.browser()
        driver.go(self.url + "status")
        stems = sorted(expected_answers())[:60]
        answers = burst(self.url, stems)
        self.assertEqual({status for status, _ in answers}, {200})

        def drawn():
            peak, now = (driver.attribute("#chart", f"data-running-{name}") for name in ("peak", "now"))
            return peak == "15" and now == "0" and driver.attribute("#chart", "aria-label")

        label = wait_until(drawn, 30, interval=0.5, what="the chart at the burst's peak and back at 0")
        self.assertRegex(label, r"^running app instances: peak 15, now 0 \(\d+ samples\)$")
        self.assertEqual(len(driver.find("#chart polyline")), 3)
        # Instances on their own scale, 0 to FR_MAX_INSTANCES; times below; the other scale beside.
        self.assertEqual(driver.attribute("#chart", "data-instances-scale"), "15")
        self.assertEqual(driver.find("#chart text.instances-scale"), ["7.5", "15", "0"])
        times = driver.find("#chart text.time")
        self.assertEqual(len(times), 3)
        self.assertTrue(all(re.fullmatch(r"\d\d:\d\d:\d\d( [AP]M)?", t) for t in times), times)
        self.assertEqual(len(driver.find("#chart text.scale")), 3)
        self.keep_screenshot(driver, "status")

    def keep_screenshot(self, driver, name):
        """With TEST_SCREENSHOTS=DIR, the page as Chromium drew it, for a person."""
        if os.environ.get("TEST_SCREENSHOTS"):
            driver.screenshot(Path(os.environ["TEST_SCREENSHOTS"]) / f"{name}.png")

    def test_a_person_uploads_an_image_in_the_browser_and_sees_the_answer(self):
        driver = self.browser()
        driver.go(self.url)
        driver.type_into("#pick", "\n".join(str(IMAGES / f"{s}.jpg") for s in ("test_00", "test_07")))
        answers = wait_until(
            lambda: len(texts := driver.find(".answer.done")) == 2 and texts, 90, interval=0.2, what="answers shown on the page"
        )
        self.assertEqual(sorted(answers), ["test_00:Paul", "test_07:Ranil"])
        self.assertEqual(driver.find(".answer.error"), [])
        # Each face's box drawn on its thumbnail, with its name and distance.
        labels = driver.find(".frame .face .label")
        self.assertEqual(sorted(label.split()[0] for label in labels), ["Paul", "Ranil"])
        self.assertTrue(all(float(label.split()[1]) < 0.001 for label in labels), labels)
        width = driver.attribute(".frame .face", "style")
        self.assertRegex(width, r"width: [1-9][\d.]*px")
        self.keep_screenshot(driver, "upload")
        driver.type_into("#pick", str(IMAGES.parent / "face_images_100.csv"))
        errors = wait_until(lambda: driver.find(".answer.error"), 90, interval=0.2, what="error shown")
        self.assertRegex(errors[0], r"^face_images_100\.csv: error 422: not a readable image")

    def test_a_person_is_added_and_removed_in_the_browsers_people_panel(self):
        key = aws(self.endpoint, "ssm").get_parameter(Name="/pages/admin-token", WithDecryption=True)["Parameter"]["Value"]
        driver = self.browser()
        driver.go(self.url)
        wait_until(lambda: "Paul (1 example)" in driver.find("#people .person"), 30, interval=0.2, what="the people listed")
        driver.type_into("#person-name", "Ada")
        driver.type_into("#person-files", str(IMAGES / "test_11.jpg"))
        driver.type_into("#admin-key", "not the key")
        driver.click("#add-person button")
        said = wait_until(lambda: "not added" in (t := driver.find("#people-said")[0]) and t, 30, interval=0.2, what="refused")
        self.assertIn("401", said)
        driver.clear("#admin-key")  # the image chosen stays chosen
        driver.type_into("#admin-key", key)
        driver.click("#add-person button")
        wait_until(lambda: "Ada (1 example)" in driver.find("#people .person"), 60, interval=0.2, what="Ada listed")
        self.keep_screenshot(driver, "people")
        driver.click("#people button", driver.find("#people .person").index("Ada (1 example)"))
        wait_until(lambda: "Ada (1 example)" not in driver.find("#people .person"), 30, interval=0.2, what="Ada removed")
        self.assertEqual(driver.find("#people-said"), ["removed Ada"])


if __name__ == "__main__":
    unittest.main()
