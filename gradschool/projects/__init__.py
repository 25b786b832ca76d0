"""Part 3's projects, one spec each, read by every implementation of the project.

    from gradschool import projects
    spec = projects.load("tabular")          # a gradschool.projects.spec.Spec
    weights = spec.initial_weights()         # canonical layout, float32, from the committed file

`python -m gradschool.projects save-weights NAME` (re)makes a project's weights file after a
change to its architecture and prints the sha256 to put into its spec.
"""

from __future__ import annotations

import importlib

from gradschool.projects.spec import Spec

PROJECTS = ("tabular", "images", "sequences", "transfer")


def load(name: str) -> Spec:
    """The spec of project `name`; an unknown name gets an error listing the projects."""
    if name not in PROJECTS:
        raise ValueError(f"unknown project {name!r}: choose one of {', '.join(PROJECTS)}")
    return importlib.import_module(f"gradschool.projects.{name}").SPEC


__all__ = ["PROJECTS", "Spec", "load"]
