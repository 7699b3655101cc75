"""Detection, embedding, nearest-neighbour naming, enrolment and weight files."""

import csv
import hashlib
import io
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy
import torch
from PIL import Image, ImageOps

from model.facenet import MTCNN, InceptionResnetV1, extract_face, fixed_image_standardization

# Lines in the service's key=value form (the library has no helper of the service's for it).
log = logging.getLogger(__name__)

# The reference model's detector settings (the course's face_recognition.py).
MTCNN_OPTIONS = dict(image_size=240, margin=0, min_face_size=20)
# Decompression-bomb guard: a small upload must not expand to gigabytes of pixels.
MAX_PIXELS = 25_000_000
# ... nor make the decoder pass over them again and again: each scan of a progressive JPEG is a pass
# over the whole image (even decoded at 1/8 scale), and a 9 MB file can hold 140,000 of them
# (minutes of CPU: docs/performance.md). Encoders write about ten; a thumbnail in the EXIF adds its
# own. Counted by their SOS marker, which the entropy-coded data cannot contain (0xFF is stuffed).
MAX_JPEG_SCANS = 100
# Larger images are scaled down before detection: MTCNN's image pyramid on a 24-megapixel photo
# takes ~1.5 GB, more than an app instance has. A face that fills a tenth of such an image is
# still ~100 px here, well above the detector's smallest face.
MAX_SIDE = 1024
# Smaller than the smallest face MTCNN looks for: its first network cannot even run on it.
MIN_SIDE = MTCNN_OPTIONS["min_face_size"]
# Faces named in one image when every face is asked for: a group photo, not a crowd (each is a pass
# through the network, ~45 ms of CPU here: docs/performance.md, and a line of the answer).
MAX_FACES = 20
# EXIF's orientation tag, and its values that turn the image a quarter (upright, width is height).
EXIF_ORIENTATION = 0x0112
TURNED = (5, 6, 7, 8)
STAND_IN_SEED = 546
STAND_IN_MARKER = "fr-stand-in-weights"


class ModelError(Exception):
    """An image this model cannot name; the message is one line for the client."""


class BadImage(ModelError):
    pass


class NoFace(ModelError):
    pass


@dataclass(frozen=True)
class Gallery:
    """Known faces: one row of `embeddings` (N x 512) per entry of `names`."""

    embeddings: torch.Tensor
    names: tuple

    @classmethod
    def load(cls, path):
        """Read `[embeddings, names]` as in the reference `data.pt` (a list of 1x512 tensors or one tensor)."""
        embeddings, names = torch.load(path, weights_only=False)
        if not isinstance(embeddings, torch.Tensor):
            embeddings = torch.cat([e.reshape(1, -1) for e in embeddings])
        if len(names) != embeddings.shape[0] or not names:
            raise ValueError(f"{path}: {embeddings.shape[0]} embeddings for {len(names)} names")
        return cls(embeddings.float(), tuple(names))

    @classmethod
    def from_rows(cls, names, embeddings):
        """A Gallery of core.gallery.Snapshot.rows(): a name and 512 little-endian float32 bytes per entry."""
        if not names:
            raise ValueError("a gallery of no one")
        rows = torch.frombuffer(bytearray(b"".join(embeddings)), dtype=torch.float32)
        return cls(rows.reshape(len(names), -1), tuple(names))

    def save(self, path):
        _atomic_save([list(self.embeddings.split(1)), list(self.names)], Path(path))

    def nearest(self, embedding):
        """The name whose embedding is closest (euclidean, as the reference model) and its distance."""
        # Exact differences, as the reference's torch.dist: cdist's faster matrix-product form loses
        # about 3e-4, a fifth of the distance between two different faces under stand-in weights.
        distances = torch.cdist(embedding.reshape(1, -1), self.embeddings, compute_mode="donot_use_mm_for_euclid_dist")[0]
        index = int(torch.argmin(distances))
        return self.names[index], float(distances[index])


def load_weights(path, data=None):
    """An InceptionResnetV1 in eval mode with the weights in `path` (or `data`, that file's bytes
    already read), and whether they are stand-ins.

    Takes the VGGFace2 state dict as facenet-pytorch publishes it (its 8631-class `logits` layer is
    dropped: only embeddings are used) or a stand-in file written by `make_stand_in`.
    """
    saved = torch.load(path if data is None else io.BytesIO(data), map_location="cpu", weights_only=True)
    stand_in = saved.get("marker") == STAND_IN_MARKER
    state = saved["state_dict"] if stand_in else saved
    state = {k: v for k, v in state.items() if not k.startswith("logits.")}
    net = InceptionResnetV1()
    net.load_state_dict(state)
    if stand_in:
        log.warning(
            'event=stand_in_weights path=%s seed=%s detail="STAND-IN WEIGHTS (seeded random), NOT VGGFace2: '
            'answers only match a gallery enrolled with them"',
            path,
            saved.get("seed"),
        )
    return net.eval(), stand_in


@dataclass(frozen=True)
class Face:
    """A face found in an image: its box `(x1, y1, x2, y2)` in the image's own pixels (as uploaded,
    turned upright), the detector's probability, the gallery's nearest name with its distance, and its
    embedding."""

    box: tuple
    probability: float
    name: str
    distance: float
    embedding: torch.Tensor = field(default=None, compare=False, repr=False)

    def embedding_bytes(self):
        return embedding_bytes(self.embedding)


def embedding_bytes(embedding):
    """An embedding (a tensor of 512) as 512 little-endian float32: core.gallery's form."""
    return embedding.numpy().astype("<f4").tobytes()


class TooManyFaces(ModelError):
    pass


class Recognizer:
    """Names the faces in an image: MTCNN boxes and crops, InceptionResnetV1 embeddings, the nearest
    gallery entry of each."""

    def __init__(self, weights_path, gallery_path=None, threads=0, max_faces=MAX_FACES):
        """`gallery_path` None gives a recognizer that can only embed (for enrolment)."""
        if threads:
            torch.set_num_threads(threads)
        self.detector = MTCNN(**MTCNN_OPTIONS)
        # Read once (on a member's first boot the volume serves each block from S3 the first time):
        # its sha256 (the results table's fingerprint) from the same bytes.
        data = Path(weights_path).read_bytes()
        self.weights_sha256 = hashlib.sha256(data).hexdigest()
        self.net, self.stand_in = load_weights(weights_path, data)
        self.gallery = Gallery.load(gallery_path) if gallery_path else None
        self.max_faces = max_faces

    def detect(self, images):
        """(boxes, probabilities) of the faces in each PIL image (all of one size), largest first;
        None for an image with none (MTCNN.detect, whose own batch call of `forward` fails when some
        images of a batch have a face and some have none)."""
        return self.detector.detect(images)

    def embed(self, data):
        """The 512-float embedding of the face in image bytes `data` (its largest), or ModelError."""
        return _only(self.embed_batch([data]))

    def recognize(self, data):
        """The name of the face in image bytes `data`, or ModelError."""
        return _only(self.recognize_batch([data]))

    def recognize_batch(self, images):
        """For each image (bytes), its name or the ModelError it raised: one pass through the network.
        The name is the largest face's, the one the reference model (MTCNN's default) picks."""
        return [result if isinstance(result, ModelError) else result[0].name for result in self.identify_batch(images)]

    def identify_batch(self, images, every=None, gallery=None):
        """For each image (bytes), its faces (Face, largest first) or the ModelError it raised. Only the
        largest face is embedded and named unless `every[i]` asks for all of image i's (at most
        `max_faces` of them: more is TooManyFaces). Named from `gallery`, or the recognizer's own."""
        gallery = gallery or self.gallery
        found = self.embed_batch(images, every, boxes=True)
        return [
            result
            if isinstance(result, ModelError)
            else [Face(box, p, *gallery.nearest(embedding), embedding=embedding) for box, p, embedding in result]
            for result in found
        ]

    def embed_batch(self, images, every=None, boxes=False):
        """For each image (bytes), its largest face's embedding or the ModelError it raised; with
        `boxes`, a list of (box, probability, embedding) per image, of every face where `every[i]`.

        One image's failure is never its neighbours': when the batch fails as a whole (a bug in
        the detector on an odd image, say), each image is tried alone, and one that fails alone
        gets a ModelError of its own."""
        every = list(every or [False] * len(images))
        try:
            found = self._embed_together(images, every)
        except Exception:
            if len(images) == 1:
                log.exception("event=model_failed")
                return [ModelError("the model failed on this image")]
            log.warning('event=batch_failed images=%d detail="trying each image alone"', len(images))
            return [result for data, all_faces in zip(images, every) for result in self.embed_batch([data], [all_faces], boxes)]
        return found if boxes else [result if isinstance(result, ModelError) else result[0][2] for result in found]

    def _embed_together(self, images, every):
        """embed_batch's one pass: MTCNN detects on images of one size together, then the faces
        found are embedded together."""
        results = [None] * len(images)
        by_size = {}
        for index, data in enumerate(images):
            try:
                image, source_size = decode(data)
                by_size.setdefault(image.size, []).append((index, image, source_size))
            except ModelError as e:
                results[index] = e
        found, crops = {}, {}  # image index -> [(box, probability)], and their crops
        with torch.inference_mode():
            for group in by_size.values():
                batch_boxes, batch_probabilities = self.detect([image for _, image, _ in group])
                for (index, image, source_size), boxes, probabilities in zip(group, batch_boxes, batch_probabilities):
                    if boxes is None:
                        results[index] = NoFace("no face found in the image")
                        continue
                    if every[index] and len(boxes) > self.max_faces:
                        results[index] = TooManyFaces(f"too many faces: {len(boxes)} (limit {self.max_faces})")
                        continue
                    count = len(boxes) if every[index] else 1
                    kept = zip(boxes[:count], probabilities)
                    found[index] = [(in_source(box, image.size, source_size), float(p)) for box, p in kept]
                    crops[index] = [_crop(image, box) for box in boxes[:count]]
            if found:
                order = sorted(found)
                embeddings = iter(self.net(torch.stack([crop for index in order for crop in crops[index]])))
                for index in order:
                    results[index] = [(box, probability, next(embeddings)) for box, probability in found[index]]
        return results


def _crop(image, box):
    """The face in `box` as the embedding network takes it: what MTCNN.extract makes of a box."""
    face = extract_face(image, box, MTCNN_OPTIONS["image_size"], MTCNN_OPTIONS["margin"])
    return fixed_image_standardization(face)


def in_source(box, size, source_size):
    """A box found in the decoded image (`size`) in the pixels of the image as uploaded and turned
    upright (`source_size`): whole pixels, inside the image (MTCNN's boxes may reach past an edge)."""
    scale_x, scale_y = source_size[0] / size[0], source_size[1] / size[1]
    x1, y1, x2, y2 = (float(v) for v in box)
    return (
        max(0, min(source_size[0], round(x1 * scale_x))),
        max(0, min(source_size[1], round(y1 * scale_y))),
        max(0, min(source_size[0], round(x2 * scale_x))),
        max(0, min(source_size[1], round(y2 * scale_y))),
    )


def _only(results):
    """The one result of a batch of one, raising it if it is an error."""
    (result,) = results
    if isinstance(result, ModelError):
        raise result
    return result


def decode_image(data):
    """An RGB PIL image from bytes, upright (EXIF orientation applied), 8 bits per channel and at
    most MAX_SIDE pixels on a side; or BadImage with the reason."""
    return decode(data)[0]


def decode(data):
    """decode_image's image and the size of the image as uploaded, turned upright (its boxes' pixels)."""
    if not data:
        raise BadImage("the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                raise BadImage(f"image too large: {image.width}x{image.height} pixels (limit {MAX_PIXELS})")
            if min(image.size) < MIN_SIDE:
                raise BadImage(f"image too small: {image.width}x{image.height} pixels (a face needs {MIN_SIDE}x{MIN_SIDE})")
            if image.format == "JPEG" and (scans := data.count(b"\xff\xda")) > MAX_JPEG_SCANS:
                raise BadImage(f"too many JPEG scans: {scans} (limit {MAX_JPEG_SCANS})")
            source_size = image.size[::-1] if image.getexif().get(EXIF_ORIENTATION) in TURNED else image.size
            # JPEG decodes straight to a smaller scale (1/2, 1/4, 1/8): the full image is never in memory.
            image.draft("RGB", (MAX_SIDE, MAX_SIDE))
            image = ImageOps.exif_transpose(image)
            image = _eight_bit(image)
            image.thumbnail((MAX_SIDE, MAX_SIDE))
            image = image.convert("RGB")
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(f"image too large (limit {MAX_PIXELS} pixels)") from None
    except Exception as e:
        raise BadImage(f"not a readable image ({type(e).__name__})") from None
    return image, source_size


def _eight_bit(image):
    """`image` with 8-bit values: Pillow's own conversion of 16-bit and float images clips at 255,
    which turns a 16-bit PNG white. 16-bit values are scaled by 255/65535, others to their range."""
    if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
        return image
    values = numpy.asarray(image, dtype=numpy.float64)
    if image.mode.startswith("I;16"):
        low, high = 0.0, 65535.0
    else:
        low, high = float(values.min()), float(values.max())
    scaled = (values - low) * (255.0 / max(high - low, 1e-9))
    return Image.fromarray(scaled.clip(0, 255).astype(numpy.uint8))


def enroll(recognizer, images_dir, labels_csv):
    """A Gallery of the labelled images (`Image,Results` rows; Image is the stem of a .jpg in images_dir).

    Identical image files are enrolled once.
    """
    embeddings, names, seen = [], [], set()
    with open(labels_csv, newline="") as f:
        for row in csv.DictReader(f):
            data = (Path(images_dir) / f"{row['Image']}.jpg").read_bytes()
            digest = hashlib.sha256(data).digest()
            if digest in seen:
                continue
            seen.add(digest)
            embeddings.append(recognizer.embed(data))
            names.append(row["Results"])
    return Gallery(torch.stack(embeddings), tuple(names))


def make_stand_in(out_dir, images_dir, labels_csv):
    """Write `weights.pt` (seeded random InceptionResnetV1) and `gallery.pt` enrolled with it.

    Deterministic for a given torch version; files that exist are kept, so it runs once.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights, gallery = out_dir / "weights.pt", out_dir / "gallery.pt"
    if not weights.exists():
        torch.manual_seed(STAND_IN_SEED)
        state = InceptionResnetV1().state_dict()
        _atomic_save({"marker": STAND_IN_MARKER, "seed": STAND_IN_SEED, "state_dict": state}, weights)
    if not gallery.exists():
        enroll(Recognizer(weights), images_dir, labels_csv).save(gallery)
    return weights, gallery


def _atomic_save(obj, path):
    """torch.save that never leaves a half-written file behind (two processes may race to make it)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
