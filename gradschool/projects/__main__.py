"""`python -m gradschool.projects save-weights NAME...`: remake projects' initial weights files."""

import argparse

from gradschool.projects import PROJECTS, load
from gradschool.projects.spec import save_weights


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m gradschool.projects")
    commands = parser.add_subparsers(dest="command", required=True)
    save = commands.add_parser("save-weights",
                               help="write datasets/weights/<project>.npz from the spec's seed")
    save.add_argument("names", nargs="+", choices=PROJECTS)
    args = parser.parse_args(argv)
    for name in args.names:
        spec = load(name)
        digest = save_weights(spec)
        status = ("matches the spec" if digest == spec.weights_sha256
                  else "put it into the spec as weights_sha256")
        print(f"{spec.weights_path}: sha256 {digest} ({status})")


if __name__ == "__main__":
    main()
