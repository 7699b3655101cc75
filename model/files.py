"""The model's files as data: their sha256, the model's fingerprint, and a gallery file's rows.
Standard library only, so that a process that never loads torch (the web tier, provisioning) can
tell which model gave an answer, and read a gallery file."""

import hashlib
import io
import pickle
import zipfile

CHUNK = 1 << 20


def sha256_hex(stream):
    """The sha256 (hex) of what is left to read in a binary stream, read a chunk at a time."""
    digest = hashlib.sha256()
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path):
    with open(path, "rb") as f:
        return sha256_hex(f)


def fingerprint(weights_sha256, gallery_identity):
    """The model's fingerprint: the sha256 of its weights file's sha256 and its gallery's identity
    (core.gallery.identity: the sha256 of the gallery's snapshot)."""
    return hashlib.sha256(f"{weights_sha256} {gallery_identity}".encode()).hexdigest()


# A gallery file is torch.save's zip of one pickle (`[embeddings, names]`) and the tensors' raw data.
# The reader below builds only what such a file holds (float tensors, lists, strings): anything else
# in the pickle is refused, so a gallery file can run no code (torch.load(weights_only=False) would),
# and provisioning, which has no torch, can read one.
EMBEDDING_FLOATS = 512
EMBEDDING_BYTES = EMBEDDING_FLOATS * 4


class GalleryFileError(ValueError):
    pass


class _Stored:
    """A tensor's storage in the file: which record holds its data."""

    def __init__(self, key):
        self.key = key


def _rebuild_tensor(storage, offset, size, stride, *_):
    return (storage, offset, tuple(size), tuple(stride))


class _GalleryUnpickler(pickle.Unpickler):
    ALLOWED = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch", "FloatStorage"): "float32",
        ("collections", "OrderedDict"): dict,
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise GalleryFileError(f"a gallery file holds no {module}.{name}")
        return self.ALLOWED[module, name]

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid[0] == "storage" and pid[1] == "float32"):
            raise GalleryFileError(f"a gallery file's tensors are float32, not {pid[1:2]}")
        return _Stored(pid[2])


def read_gallery(path):
    """(names, embeddings) of a gallery file as `model.Gallery.save` and the course's `data.pt` write
    it (`[embeddings, names]`: a list of 1x512 tensors, or one Nx512 tensor): `embeddings` one bytes
    of 512 little-endian float32 per name. GalleryFileError if it is not one."""
    try:
        with zipfile.ZipFile(path) as archive:
            (pickled,) = [n for n in archive.namelist() if n.endswith("/data.pkl")]
            root = pickled.rsplit("/", 1)[0]
            embeddings, names = _GalleryUnpickler(io.BytesIO(archive.read(pickled))).load()
            tensors = embeddings if isinstance(embeddings, list) else [embeddings]
            rows = [row for tensor in tensors for row in _rows(archive, root, tensor)]
    except (zipfile.BadZipFile, pickle.UnpicklingError, KeyError, TypeError, ValueError) as e:
        raise GalleryFileError(f"{path}: not a gallery file ({e})") from None
    if not names or len(names) != len(rows) or not all(isinstance(n, str) for n in names):
        raise GalleryFileError(f"{path}: {len(rows)} embeddings for {len(names)} names")
    return list(names), rows


def _rows(archive, root, tensor):
    """Each row of a stored tensor (N x 512 or 512, contiguous) as bytes of little-endian float32."""
    storage, offset, size, stride = tensor
    count = size[0] if len(size) == 2 else 1
    if size[-1] != EMBEDDING_FLOATS or stride[-1] != 1 or (len(size) == 2 and stride[0] != EMBEDDING_FLOATS):
        raise ValueError(f"a tensor of size {size} and stride {stride}, not rows of {EMBEDDING_FLOATS}")
    data = archive.read(f"{root}/data/{storage.key}")
    # Files of older torch versions do not say: they were written little-endian (as on x86).
    if f"{root}/byteorder" in archive.namelist() and archive.read(f"{root}/byteorder") != b"little":
        raise ValueError("a big-endian file")
    start = offset * 4
    return [data[start + i * EMBEDDING_BYTES : start + (i + 1) * EMBEDDING_BYTES] for i in range(count)]
