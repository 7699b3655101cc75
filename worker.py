"""App tier worker: names the faces in the images the web tier queues, one message at a time.

Loads the model once (FR_WEIGHTS, FR_GALLERY), then long-polls the request queue. For each request
it reads the image from the input bucket, recognises it, sends `{id, name, result}` (or
`{id, name, error}` for an image it cannot name) to the message's reply queue, writes
`stem -> name` to the output bucket, and only then deletes the request. While it works, a heartbeat
keeps the message invisible. A request whose handling fails unexpectedly, or whose worker dies, is
not deleted: SQS shows it again after the visibility timeout (FR_VISIBILITY_TIMEOUT), and after a
bounded number of receives moves it to the dead-letter queue, where the web tier sees it.

One worker runs per app instance (systemd on AWS, the local launcher in local mode). Stops on
SIGTERM/SIGINT after finishing the image in hand (exit 0); a second signal exits at once.
"""
import logging
import threading
import time

import common
from common import Reply, Request

log = logging.getLogger("worker")


class Worker:
    def __init__(self, config, recognizer, s3, sqs):
        self.config = config
        self.recognizer = recognizer
        self.s3 = s3
        self.sqs = sqs
        self.request_url, _ = common.queue_urls(sqs, config)

    def run(self, stop):
        from botocore.exceptions import BotoCoreError, ClientError

        log.info("event=ready queue=%s", self.config.req_queue)
        while not stop.is_set():
            try:
                messages = self.sqs.receive_message(
                    QueueUrl=self.request_url, MaxNumberOfMessages=1, WaitTimeSeconds=self.config.poll_wait
                ).get("Messages", [])
            except (BotoCoreError, ClientError) as e:
                log.warning("event=receive_failed error=%s", e)
                stop.wait(1)
                continue
            for message in messages:
                if stop.is_set():
                    self._release(message)
                    continue
                try:
                    self.handle(message)
                except Exception:
                    # Left on the queue: retried after the visibility timeout, then dead-lettered.
                    log.exception("event=request_failed message_id=%s", message.get("MessageId"))

    def handle(self, message):
        started = time.monotonic()
        try:
            request = common.decode(Request, message["Body"])
        except ValueError as e:
            log.warning("event=bad_request error=%s", e)
            self._delete(message)
            return
        log.info("event=received id=%s stem=%s", request.id, request.name)
        with Heartbeat(self.sqs, self.request_url, message["ReceiptHandle"], self.config.visibility_timeout):
            reply = self.answer(request)
            self.sqs.send_message(QueueUrl=request.reply_to, MessageBody=common.encode(reply))
            if reply.result is not None:
                self.s3.put_object(Bucket=self.config.out_bucket, Key=request.name, Body=reply.result.encode())
            self._delete(message)
        log.info(
            "event=done id=%s stem=%s result=%s error=%s ms=%.0f",
            request.id, request.name, reply.result, reply.error, (time.monotonic() - started) * 1000,
        )

    def answer(self, request):
        """The Reply for a request: the name, or an error the client can act on."""
        from botocore.exceptions import ClientError
        from model import ModelError

        try:
            data = self.s3.get_object(Bucket=self.config.in_bucket, Key=request.key)["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
                raise
            return Reply(request.id, request.name, error="the image is no longer in the input bucket")
        started = time.monotonic()
        try:
            name, error = self.recognizer.recognize(data), None
        except ModelError as e:
            name, error = None, str(e)
        model_ms = f"{(time.monotonic() - started) * 1000:.1f}"
        return Reply(request.id, request.name, result=name, error=error, model_ms=model_ms)

    def _delete(self, message):
        self.sqs.delete_message(QueueUrl=self.request_url, ReceiptHandle=message["ReceiptHandle"])

    def _release(self, message):
        """Give a message received while stopping back to the queue at once."""
        self.sqs.change_message_visibility(
            QueueUrl=self.request_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )


class Heartbeat:
    """Keeps a message invisible while its job runs, so the queue's visibility timeout can be short:
    the message of a worker that died reappears soon, that of a slow job never does."""

    def __init__(self, sqs, queue_url, receipt, timeout):
        self.extend = dict(QueueUrl=queue_url, ReceiptHandle=receipt, VisibilityTimeout=timeout)
        self.every = timeout / 2
        self.done = threading.Event()
        self.sqs = sqs
        self.thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()

    def _beat(self):
        from botocore.exceptions import BotoCoreError, ClientError

        while not self.done.wait(self.every):
            try:
                self.sqs.change_message_visibility(**self.extend)
            except (BotoCoreError, ClientError) as e:
                log.warning("event=heartbeat_failed error=%s", e)


def load_recognizer(config):
    """The model, loaded once per process (or once per fork server, in local mode)."""
    common.require_file(config.weights, "set FR_WEIGHTS, or run ./setup.sh local to make stand-in weights")
    common.require_file(config.gallery, "set FR_GALLERY, or run ./setup.sh local to enrol a stand-in gallery")
    from model import Recognizer

    started = time.monotonic()
    recognizer = Recognizer(config.weights, config.gallery, config.torch_threads)
    log.info("event=model_loaded seconds=%.2f stand_in=%s", time.monotonic() - started, recognizer.stand_in)
    return recognizer


def serve(config, recognizer, stop):
    """Take requests until `stop` is set (the clients are made here: after a fork, never before)."""
    Worker(config, recognizer, common.client(config, "s3"), common.client(config, "sqs")).run(stop)
    log.info("event=stopped")


def main():
    config = common.load_config_or_exit()
    common.setup_logging(config.log_level)
    stop = threading.Event()
    common.stop_on_signals(stop)
    serve(config, load_recognizer(config), stop)


if __name__ == "__main__":
    main()
