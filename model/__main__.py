"""Command line of the model library. It knows nothing of the service: the files come as options.

    python -m model --weights W --gallery G [--threads N] IMAGE...   print `stem:name` for each image
    python -m model enroll --weights W IMAGES_DIR CSV OUT             build a gallery from labelled images
    python -m model stand-in OUT_DIR IMAGES_DIR CSV                   write stand-in weights + a gallery
                                                                      enrolled with them

`python -m tools.recognize IMAGE...` runs the first with the files the service's workers use
(FR_WEIGHTS, FR_GALLERY), so it prints what the running service answers for the same images.
"""

import argparse
import logging
import sys
from pathlib import Path

from model import ModelError, Recognizer, enroll, make_stand_in


def main(argv):
    if argv[:1] == ["enroll"]:
        parser = argparse.ArgumentParser(prog="python -m model enroll", description="Build a gallery.")
        parser.add_argument("--weights", required=True)
        for name in ("images_dir", "labels_csv", "out"):
            parser.add_argument(name)
        args = parser.parse_args(argv[1:])
        enroll(Recognizer(args.weights), args.images_dir, args.labels_csv).save(args.out)
        return 0
    if argv[:1] == ["stand-in"]:
        parser = argparse.ArgumentParser(prog="python -m model stand-in", description="Make stand-in files.")
        for name in ("out_dir", "images_dir", "labels_csv"):
            parser.add_argument(name)
        args = parser.parse_args(argv[1:])
        for path in make_stand_in(args.out_dir, args.images_dir, args.labels_csv):
            print(path)
        return 0
    parser = argparse.ArgumentParser(prog="python -m model", description="Name the face in each image.")
    parser.add_argument("--weights", required=True, help="InceptionResnetV1 weights (VGGFace2 state dict)")
    parser.add_argument("--gallery", required=True, help="known faces: [embeddings, names]")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("images", nargs="+")
    args = parser.parse_args(argv)
    recognizer = Recognizer(args.weights, args.gallery, args.threads)
    status = 0
    for path in args.images:
        stem = Path(path).stem
        try:
            print(f"{stem}:{recognizer.recognize(Path(path).read_bytes())}")
        except (ModelError, OSError) as e:
            print(f"{stem}: error: {e}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    sys.exit(main(sys.argv[1:]))
