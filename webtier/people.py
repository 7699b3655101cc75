"""The people the service knows, over HTTP: the web tier's side of the gallery (core/gallery.py).

`GET /people` lists them; `POST /people/{name}` adds example images to a person (new or known), each
embedded by the app tier (a Request with `embed`: the worker answers its one face's embedding, or why
not), and `DELETE /people/{name}` removes one. A change is all or nothing: every example is embedded
first, and an example the app tier refuses (no face, two faces, not an image) refuses the request,
with nothing added. Then the example images are copied into the gallery bucket, the new snapshot is
published, and only then is the change answered: every request sent after it carries the new version,
so whichever worker answers it names faces from the changed gallery. Changes are taken one at a time
(this web tier is the gallery's one writer). Who may change it is web.py's (`Authorization`)."""

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import common
from core import gallery
from core.gallery import MAX_EXAMPLES, MAX_PEOPLE, Example, GalleryStore
from core.messages import Request
from webtier.refusals import Refusal
from webtier.uploads import NotRecognized, safe_name, sha256_of, upload_key

log = common.EventLog("web")

# A web tier that found no gallery asks the bucket again at most this often; one that has one looks
# at `current.json` this often (one small GET), so that a version published by another writer
# (tools/reembed.py) is stamped on requests within it.
RETRY_SECONDS = 1.0
REFRESH_SECONDS = 5.0


class NoGallery(Refusal):
    """The gallery bucket has no gallery (provisioning seeds it) or could not be read."""

    status = 503


class NoSuchPerson(Refusal):
    status = 404


class Refused(Refusal):
    """A change the gallery's limits refuse, or an example the app tier could not embed."""

    status = 422


class People:
    """The gallery as this web tier knows it: the newest snapshot, its version (stamped on every
    request) and its identity (the results table's fingerprint takes it)."""

    def __init__(self, config, s3, uploads):
        self.config = config
        self.s3 = s3
        self.store = GalleryStore(s3, config.gallery_bucket)
        self.uploads = uploads
        self.changing = threading.Lock()
        self._lock = threading.Lock()
        self._snapshot, self._identity, self._asked = None, None, -RETRY_SECONDS

    def current(self):
        """(Snapshot, identity): read from the bucket the first time (and until it has one), and again
        when `current.json`, looked at every REFRESH_SECONDS, names another version."""
        from botocore.exceptions import BotoCoreError, ClientError

        with self._lock:
            wait = RETRY_SECONDS if self._snapshot is None else REFRESH_SECONDS
            if time.monotonic() - self._asked >= wait:
                try:
                    return self._refresh()
                except (BotoCoreError, ClientError) as e:
                    if self._snapshot is None:
                        raise
                    log.warning("gallery_unread", error=e, detail="going on with the version in hand")
            if self._snapshot is None:
                raise self._none()
            return self._snapshot, self._identity

    def latest(self):
        """(Snapshot, identity) as the bucket has it now, errors raised: a change starts from it, not
        from what this tier last saw (a gallery embedded again for new weights by tools/reembed.py, say)."""
        with self._lock:
            return self._refresh()

    def _refresh(self):
        """Look at `current.json` (with the lock held), read the snapshot it names if it is not the one
        in hand, and return the one in hand; NoGallery when there is none."""
        self._asked = time.monotonic()
        newest = self.store.newest()
        if newest is not None and (self._snapshot is None or newest != self._snapshot.version):
            self._snapshot, self._identity = self.store.current(newest)
            log.info("gallery", version=self._snapshot.version, people=len(self._snapshot.people))
        if self._snapshot is None:
            raise self._none()
        return self._snapshot, self._identity

    def _none(self):
        return NoGallery(f"no gallery in s3://{self.config.gallery_bucket} yet: provisioning seeds it")

    def version(self):
        """The version a request is stamped with: None while there is no gallery (the worker then
        takes the newest it finds)."""
        try:
            return self.current()[0].version
        except NoGallery:
            return None

    def identity(self):
        return self.current()[1]

    def listing(self):
        snapshot = self.current()[0]
        return {"version": snapshot.version, "people": snapshot.listing()}

    def add(self, name, parts):
        """Add the example images `parts` (multipart parts) to person `name`: {"name", "added", "examples"}."""
        name = check(name)
        with self.changing:
            snapshot, _ = self.latest()
            had = len(snapshot.examples(name))
            if not had and len(snapshot.people) >= MAX_PEOPLE:
                raise Refused(f"the gallery is full: {MAX_PEOPLE} people (remove someone first)", 409)
            if had + len(parts) > MAX_EXAMPLES:
                raise Refused(f"a person has at most {MAX_EXAMPLES} examples: {name} has {had}, {len(parts)} more refused", 409)
            with ThreadPoolExecutor(len(parts), thread_name_prefix="embed") as embedding:
                embedded = list(embedding.map(self.embed, parts, range(1, len(parts) + 1)))
            examples = []
            for part, vector in zip(parts, embedded):
                key = gallery.example_key(name, sha256_of(part.body), safe_name(part.filename)[1])
                part.body.seek(0)
                self.s3.put_object(Bucket=self.config.gallery_bucket, Key=key, Body=part.body)
                examples.append(Example(vector, key))
            self.publish(snapshot.with_examples(name, examples))
        log.info("person_added", name=name, added=len(parts), examples=had + len(parts))
        return {"name": name, "added": len(parts), "examples": had + len(parts)}

    def remove(self, name):
        """Remove person `name` and their example images: {"name", "removed"} (examples removed)."""
        name = check(name)
        with self.changing:
            snapshot, _ = self.latest()
            examples = snapshot.examples(name)
            if not examples:
                raise NoSuchPerson(f"no one called {name} in the gallery")
            self.publish(snapshot.without(name))
        images = [{"Key": e.image} for e in examples if e.image]
        if images:
            self.s3.delete_objects(Bucket=self.config.gallery_bucket, Delete={"Objects": images, "Quiet": True})
        log.info("person_removed", name=name, examples=len(examples))
        return {"name": name, "removed": len(examples)}

    def publish(self, snapshot):
        identity = self.store.publish(snapshot)
        with self._lock:
            self._snapshot, self._identity = snapshot, identity
        log.info("gallery", version=snapshot.version, people=len(snapshot.people))

    def embed(self, part, number):
        """The embedding (bytes) of example image `part` (the `number`th), from the app tier; Refused
        with the reason (and which example) when it has none."""
        request_id = uuid.uuid4().hex
        stem, key = upload_key(request_id, part.filename)
        request = Request(request_id, key, stem, self.uploads.reply_url, embed=True, gallery=self.version())
        try:
            reply, _ = self.uploads.ask(request, part.body)
        except NotRecognized as e:
            raise Refused(f"example {number} ({part.filename}): {e.reason}") from None
        finally:
            self.uploads.discard(key)
        return gallery.decode_embedding(reply.embedding)


def check(name):
    """A person's name from the URL, or a 400 with the reason."""
    try:
        return gallery.check_name(name)
    except gallery.BadName as e:
        raise Refusal(f"bad name: {e}") from None
