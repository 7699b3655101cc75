"""The gallery as data: the people the service knows, kept in the S3 bucket `{prefix}-gallery-bucket`,
so that a person can be added or removed while the service runs (webtier/people.py) and every worker
names faces from the same gallery.

The bucket holds immutable snapshots, `versions/<version>.json`, each the whole gallery: every person
with their examples, each an embedding (512 little-endian float32, base64) and the key of the image it
was computed from (`examples/<name>/<sha256>.<ext>`, kept so that the gallery can be embedded again
when the weights change; none for the entries seeded from a gallery file, which has no images). The
object `current.json` names the newest. Provisioning (and the local stack, through it) seeds version
1 from FR_GALLERY when there is none; after that the web tier is the gallery's one writer: it writes a
new snapshot, then `current.json`, and only then answers the change.

Each request carries the version the web tier had when it sent it (Request.gallery): a worker whose
gallery is older loads the newest before it answers, so an answer given after a change was accepted
uses the changed gallery, whichever worker gives it. Standard library only: the web tier, which has no
torch, reads and writes snapshots; the worker turns one into a model.Gallery.
"""

import base64
import hashlib
import json
import unicodedata
from dataclasses import dataclass

from model.files import EMBEDDING_BYTES

POINTER = "current.json"
# Limits of a gallery changed over HTTP (docs/api.md): a snapshot of them all is ~14 MB, which a
# worker reads again after each change.
MAX_PEOPLE = 500
MAX_EXAMPLES = 10
MAX_NAME_CHARS = 64
# Punctuation a name may have beside letters, digits and single spaces ("Anne-Marie O'Neil Jr.").
NAME_PUNCTUATION = " .'-_"
# The name the web tier gives a stranger (FR_MATCH_THRESHOLD): nobody may be called that.
UNKNOWN = "unknown"


class BadName(ValueError):
    """A person's name the gallery does not take; the message is one line for the client."""


def check_name(name):
    """`name`, NFC-normalised, or BadName with the reason: 1-64 letters, digits and NAME_PUNCTUATION,
    no leading, trailing or double space, and not UNKNOWN."""
    name = unicodedata.normalize("NFC", name)
    if not 0 < len(name) <= MAX_NAME_CHARS:
        raise BadName(f"a name is 1 to {MAX_NAME_CHARS} characters")
    if not all(c.isalnum() or c in NAME_PUNCTUATION for c in name) or name != name.strip() or "  " in name:
        raise BadName(f"a name has letters, digits, single spaces and {NAME_PUNCTUATION.strip()!r} only")
    if name.casefold() == UNKNOWN:
        raise BadName(f"{UNKNOWN!r} is what a stranger is called")
    return name


def snapshot_key(version):
    return f"versions/{version:08d}.json"


def example_key(name, sha256, ext):
    return f"examples/{name}/{sha256}{ext}"


@dataclass(frozen=True)
class Example:
    """One example of a person: its embedding (bytes) and the key of its image (None: seeded from a file)."""

    embedding: bytes
    image: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """One version of the gallery: `people` is ((name, (Example, ...)), ...), in the order they came."""

    version: int
    people: tuple

    @classmethod
    def seed(cls, names, embeddings):
        """Version 1 from a gallery file's rows (model.files.read_gallery): one person per name."""
        people = {}
        for name, embedding in zip(names, embeddings):
            people.setdefault(name, []).append(Example(embedding))
        return cls(1, tuple((name, tuple(examples)) for name, examples in people.items()))

    def listing(self):
        """What GET /people shows: [{"name", "examples"}]."""
        return [{"name": name, "examples": len(examples)} for name, examples in self.people]

    def examples(self, name):
        return dict(self.people).get(name, ())

    def with_examples(self, name, examples):
        """The next version, with `examples` added to person `name` (new or known)."""
        known = dict(self.people)
        people = [(n, e + tuple(examples) if n == name else e) for n, e in self.people]
        if name not in known:
            people.append((name, tuple(examples)))
        return Snapshot(self.version + 1, tuple(people))

    def without(self, name):
        """The next version, without person `name`."""
        return Snapshot(self.version + 1, tuple((n, e) for n, e in self.people if n != name))

    def rows(self):
        """(names, embeddings): a name per example, as the worker's model.Gallery takes them."""
        pairs = [(name, example.embedding) for name, examples in self.people for example in examples]
        return [name for name, _ in pairs], [embedding for _, embedding in pairs]

    def body(self):
        """The snapshot's object: JSON, the same bytes for the same gallery."""
        people = [
            {
                "name": name,
                "examples": [{"image": e.image, "embedding": base64.b64encode(e.embedding).decode()} for e in examples],
            }
            for name, examples in self.people
        ]
        return json.dumps({"version": self.version, "people": people}, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, body):
        """The Snapshot of an object `body` wrote; ValueError if it is not one."""
        try:
            data = json.loads(body)
            people = tuple(
                (
                    person["name"],
                    tuple(Example(decode_embedding(e["embedding"]), e["image"]) for e in person["examples"]),
                )
                for person in data["people"]
            )
            version = data["version"]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a gallery snapshot: {e!r}") from None
        malformed = not isinstance(version, int) or any(
            not isinstance(name, str) or not isinstance(e.image, (str, type(None))) for name, examples in people for e in examples
        )
        if malformed:
            raise ValueError("not a gallery snapshot: a version, name or image is malformed")
        return cls(version, people)


def decode_embedding(text):
    """An embedding from its base64 text (a worker's Reply.embedding); ValueError if it is not one."""
    embedding = base64.b64decode(text, validate=True)
    if len(embedding) != EMBEDDING_BYTES:
        raise ValueError(f"an embedding of {len(embedding)} bytes, not {EMBEDDING_BYTES}")
    return embedding


def identity(body):
    """What the model's fingerprint takes of a gallery: the sha256 of its snapshot's bytes."""
    return hashlib.sha256(body).hexdigest()


class GalleryStore:
    """The gallery bucket: read the newest snapshot, publish a new one, seed the first."""

    def __init__(self, s3, bucket):
        self.s3 = s3
        self.bucket = bucket

    def newest(self):
        """The newest version's number (a read of `current.json` alone), or None when there is none."""
        try:
            return json.loads(self.s3.get_object(Bucket=self.bucket, Key=POINTER)["Body"].read())["version"]
        except self.s3.exceptions.NoSuchKey:
            return None

    def current(self, version=None):
        """(Snapshot, its identity) of the newest version (or of `version`), or None when the bucket has none yet."""
        version = version or self.newest()
        if version is None:
            return None
        body = self.s3.get_object(Bucket=self.bucket, Key=snapshot_key(version))["Body"].read()
        return Snapshot.parse(body), identity(body)

    def publish(self, snapshot):
        """Make `snapshot` the newest (its object first, then the pointer): its identity. The one
        before it is kept (a worker may be reading it); older ones are removed."""
        body = snapshot.body()
        self.s3.put_object(Bucket=self.bucket, Key=snapshot_key(snapshot.version), Body=body)
        self.s3.put_object(Bucket=self.bucket, Key=POINTER, Body=json.dumps({"version": snapshot.version}).encode())
        old = [{"Key": snapshot_key(v)} for v in range(max(1, snapshot.version - 3), snapshot.version - 1)]
        if old:
            self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": old, "Quiet": True})
        return identity(body)

    def seed(self, names, embeddings):
        """Version 1 from a gallery file's rows, unless the bucket has a gallery: "seeded" or "exists"."""
        if self.newest() is not None:
            return "exists"
        self.publish(Snapshot.seed(names, embeddings))
        return "seeded"


class NoGallery(Exception):
    """The gallery bucket has no gallery yet (provisioning seeds it)."""


class Follower:
    """A reader's side (the worker's): the newest gallery, read again only when a request names a
    newer version than it has; `build(names, embeddings)` makes what the reader names faces with."""

    def __init__(self, store, build):
        self.store = store
        self.build = build
        self.version = self.people = 0
        self.gallery = self.identity = None

    def follow(self, wanted=0):
        """Load the newest gallery unless one is loaded that is `wanted`'s version or newer (one
        comparison per batch; 0: any version); whether it loaded one. NoGallery when there is none."""
        if self.gallery is not None and wanted <= self.version:
            return False
        found = self.store.current()
        if found is None:
            raise NoGallery(f"no gallery in s3://{self.store.bucket} (provisioning seeds it from FR_GALLERY)")
        snapshot, self.identity = found
        self.gallery = self.build(*snapshot.rows())
        self.version = snapshot.version
        self.people = len(snapshot.people)
        return True
