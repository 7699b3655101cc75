"""Command line of the model library.

    python -m model IMAGE...                      print `stem:name` for each image
    python -m model enroll IMAGES_DIR CSV OUT     build a gallery from labelled images
    python -m model stand-in OUT_DIR IMAGES_DIR CSV
                                                  write stand-in weights + a gallery enrolled with them

Weights and gallery come from the same FR_* configuration as the worker (see README), so this
prints what the running service answers for the same image.
"""
import argparse
import sys
from pathlib import Path

import common
from model import ModelError, Recognizer, enroll, make_stand_in


def positional(command, names, argv):
    parser = argparse.ArgumentParser(prog=f"python -m model {command}")
    for name in names:
        parser.add_argument(name)
    return parser.parse_args(argv)


def main(argv):
    if argv[:1] == ["enroll"]:
        args = positional("enroll", ["images_dir", "labels_csv", "out"], argv[1:])
        config = common.load_config_or_exit()
        enroll(Recognizer(config.weights), args.images_dir, args.labels_csv).save(args.out)
        return 0
    if argv[:1] == ["stand-in"]:
        args = positional("stand-in", ["out_dir", "images_dir", "labels_csv"], argv[1:])
        for path in make_stand_in(args.out_dir, args.images_dir, args.labels_csv):
            print(path)
        return 0
    parser = argparse.ArgumentParser(prog="python -m model", description="Name the face in each image.")
    parser.add_argument("images", nargs="+")
    args = parser.parse_args(argv)
    config = common.load_config_or_exit()
    recognizer = Recognizer(config.weights, config.gallery, config.torch_threads)
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
    common.setup_logging()
    sys.exit(main(sys.argv[1:]))
