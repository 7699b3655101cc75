"""What a client can be refused. Every error the web tier answers a request with is a Refusal: it
carries its HTTP `status` (its class's, or given) and a one-line `reason`, and web.py turns any
of them into the response in one place. (defnull/multipart's MultipartError.http_status; gunicorn's
http/errors.py.)"""


class Refusal(Exception):
    """A request refused: `status` and the one-line `reason` (the message)."""

    status = 400
    # Raised before the request's body was read whole: the rest is drained before closing, so that
    # the client reads the answer instead of a reset connection.
    unread_input = False
    # Headers the response carries beside the status (a 401's WWW-Authenticate).
    headers = {}

    def __init__(self, reason, status=None):
        super().__init__(reason)
        if status is not None:
            self.status = status

    @property
    def reason(self):
        return str(self)
