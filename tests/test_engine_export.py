"""The engine's code lives once: gradschool/engine/ is exactly what the Part 2 notebooks export
(and each Part 3 implementation module what its notebook exports)."""

from __future__ import annotations

import importlib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograder import export


def test_engine_modules_are_in_sync_with_their_notebooks():
    problems = export.drift()
    assert problems == [], "\n".join(problems)


def test_every_exported_module_imports():
    for notebook in export.exporting_notebooks():
        target, _ = export.module_source(notebook)
        name = ".".join(target.relative_to(export.ROOT).with_suffix("").parts)
        importlib.import_module(name)


def test_export_keeps_solutions_and_drops_everything_else(tmp_path):
    nb = new_notebook(metadata={"gradschool": {"export": "gradschool/engine/toy.py",
                                               "doc": "A toy module."}})
    nb.cells = [
        new_markdown_cell("# export\nnot code"),
        new_code_cell("# export\nimport math\n\n\ndef double(x):\n    \"\"\"Twice x.\"\"\"\n"
                      "    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"),
        new_code_cell("assert double(2) == 4"),
        new_code_cell("#export-ish, not exported\nz = 1"),
        new_code_cell("# export\nfrom __future__ import annotations\nimport math\n\n\n"
                      "def root(x):\n    return math.sqrt(x)"),
    ]
    path = tmp_path / "toy.ipynb"
    nbformat.write(nb, path)
    target, text = export.module_source(path)
    assert target == export.ROOT / "gradschool" / "engine" / "toy.py"
    assert text == (
        '"""A toy module.\n\nGenerated from toy.ipynb by `make export`:\nedit the notebook, '
        'not this file.\n"""\n\nfrom __future__ import annotations\n\nimport math\n\n\n'
        'def double(x):\n    """Twice x."""\n    return 2 * x\n\n\ndef root(x):\n'
        '    return math.sqrt(x)\n')
    namespace: dict = {}
    exec(compile(text, "toy.py", "exec"), namespace)  # noqa: S102 -- the generated module runs
    assert namespace["double"](3) == 6 and namespace["root"](9) == 3


def test_a_module_that_no_notebook_exports_is_reported(tmp_path, monkeypatch):
    stray = tmp_path / "gradschool" / "projects" / "tabular_torch.py"
    stray.parent.mkdir(parents=True)
    stray.write_text("x = 1\n")
    (tmp_path / "gradschool" / "projects" / "spec.py").write_text("")  # hand-written: not reported
    (tmp_path / "gradschool" / "engine").mkdir()
    (tmp_path / "gradschool" / "engine" / "__init__.py").write_text("")
    (tmp_path / "gradschool" / "engine" / "toy.py").write_text("")
    (tmp_path / "gradschool" / "practice").mkdir()
    (tmp_path / "gradschool" / "practice" / "__init__.py").write_text("")  # hand-written
    (tmp_path / "gradschool" / "practice" / "compile_torch.py").write_text("")
    monkeypatch.setattr(export, "ROOT", tmp_path)
    monkeypatch.setattr(export, "exporting_notebooks", lambda: [])
    assert export.drift() == ["gradschool/engine/toy.py is exported by no notebook",
                              "gradschool/projects/tabular_torch.py is exported by no notebook",
                              "gradschool/practice/compile_torch.py is exported by no notebook"]
