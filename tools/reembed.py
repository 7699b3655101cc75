"""The gallery embedded again for new weights: `python -m tools.reembed` (an operator's command, with
the service's FR_* variables: FR_WEIGHTS the new weights, FR_GALLERY a gallery file enrolled with them,
`python -m model enroll`).

Embeddings of one set of weights mean nothing to another, so with new weights every entry of the
gallery must be made again: each example added over HTTP from its image, which the gallery bucket keeps
for this (core/gallery.py); the entries seeded from a gallery file have no image, and are taken from
FR_GALLERY, as provisioning seeds them. The result is published as the next version: the web tier
sees it within webtier/people.py's REFRESH_SECONDS and stamps it on its requests, and each worker reads
it before its next answer. Run it when the app tier's new image (with the new weights) is rolled out,
and while nobody changes the people (the web tier is otherwise the gallery's one writer; a change
after this one starts from it). An example whose image no longer shows one face is left out, and said.
"""

import sys

from core import cloud, settings
from core.gallery import Example, GalleryStore, Snapshot
from model import ModelError, Recognizer
from model.files import read_gallery
from model.recognizer import embedding_bytes


def reembedded(snapshot, recognizer, image_of, seed):
    """The next version of `snapshot` for the recognizer's weights: `seed`'s entries (a Snapshot of a
    gallery file enrolled with them), then each person's examples with an image, embedded again from
    `image_of(key)`; and the examples left out, (name, key, reason)."""
    people = {name: list(examples) for name, examples in seed.people}
    left_out = []
    for name, examples in snapshot.people:
        for example in examples:
            if example.image is None:
                continue
            (faces,) = recognizer.embed_batch([image_of(example.image)], [True], boxes=True)
            if isinstance(faces, ModelError) or len(faces) != 1:
                left_out.append((name, example.image, str(faces) if isinstance(faces, ModelError) else f"{len(faces)} faces"))
                continue
            people.setdefault(name, []).append(Example(embedding_bytes(faces[0][2]), example.image))
    return Snapshot(snapshot.version + 1, tuple((n, tuple(e)) for n, e in people.items())), left_out


def main():
    config = settings.load_config_or_exit()
    settings.require_file(config.weights, "FR_WEIGHTS: the new weights")
    s3 = cloud.client(config, "s3")
    store = GalleryStore(s3, config.gallery_bucket)
    found = store.current()
    if found is None:
        print(f"no gallery in s3://{config.gallery_bucket}: provisioning seeds it", file=sys.stderr)
        return 1
    recognizer = Recognizer(config.weights)
    seed = Snapshot.seed(*read_gallery(config.gallery))
    snapshot, left_out = reembedded(
        found[0], recognizer, lambda key: s3.get_object(Bucket=config.gallery_bucket, Key=key)["Body"].read(), seed
    )
    store.publish(snapshot)
    for name, key, reason in left_out:
        print(f"left out    {name}: {key}: {reason}")
    print(f"published   version {snapshot.version}: {len(snapshot.people)} people, {len(snapshot.rows()[0])} examples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
