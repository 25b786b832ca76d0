"""Remake a project's committed files after a change to its spec:

    python -m gradschool.projects save-weights NAME...          initial weights (prints the sha256)
    python -m gradschool.projects save-reference NAME --from torch
        the first batch's loss and gradients, computed by that implementation's module
        gradschool.projects.<NAME>_<implementation> (its first_batch_loss_and_gradients())
"""

import argparse
import importlib

from gradschool.projects import PROJECTS, load
from gradschool.projects.spec import FRAMEWORKS, save_reference, save_weights


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m gradschool.projects")
    commands = parser.add_subparsers(dest="command", required=True)
    save = commands.add_parser("save-weights",
                               help="write datasets/weights/<project>.npz from the spec's seed")
    save.add_argument("names", nargs="+", choices=PROJECTS)
    reference = commands.add_parser("save-reference",
                                    help="write datasets/weights/<project>.reference.npz")
    reference.add_argument("name", choices=PROJECTS)
    reference.add_argument("--from", dest="implementation", choices=FRAMEWORKS, default="torch")
    args = parser.parse_args(argv)
    if args.command == "save-reference":
        spec = load(args.name)
        module = importlib.import_module(f"gradschool.projects.{args.name}_{args.implementation}")
        loss, gradients = module.first_batch_loss_and_gradients()
        print(f"{save_reference(spec, loss, gradients)}: first-batch loss {float(loss):.6f}")
        return
    for name in args.names:
        spec = load(name)
        digest = save_weights(spec)
        status = ("matches the spec" if digest == spec.weights_sha256
                  else "put it into the spec as weights_sha256")
        print(f"{spec.weights_path}: sha256 {digest} ({status})")


if __name__ == "__main__":
    main()
