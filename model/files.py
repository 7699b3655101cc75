"""The model's files as data: their sha256 and the model's fingerprint. Standard library only, so
that a process that never loads torch (the web tier) can tell which model gave an answer."""

import hashlib

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


def fingerprint(weights, gallery):
    """The model's fingerprint: the sha256 of the sha256s of its weights file and its gallery file."""
    return hashlib.sha256(f"{file_sha256(weights)} {file_sha256(gallery)}".encode()).hexdigest()
