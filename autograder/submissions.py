"""Find the submissions of one assignment, whatever shape the instructor collected them in.

Three sources are read:

* nbgrader's layout: ``SUBMISSIONS/<student>/<assignment>/<notebook>.ipynb``
* a flat folder: ``SUBMISSIONS/<student>--<notebook>.ipynb``, or any names with an
  ``--id-pattern`` (an LMS's zip already unpacked: its files' paths are matched as a zip's are)
* an LMS zip (``SUBMISSIONS`` is a ``.zip`` file): each member's path inside the archive is
  matched by a regular expression whose named group ``student`` is the student id and whose
  optional group ``notebook`` is the file name as the student handed it in (default: what
  follows the match). The default, :data:`DEFAULT_ID_PATTERN`, reads Canvas's
  ``smithjane_12345_67890_start.ipynb`` (and ``smithjane_LATE_12345_67890_start-1.ipynb``)
  as student ``12345``, file ``start.ipynb``.

A zip is never extracted as it stands: each notebook member is read (at most
:data:`MAX_MEMBER_BYTES`) into a file of the grader's own naming in a temporary folder.
A member whose path escapes the archive (``../``, an absolute path), a link, an encrypted or
oversized member is *refused*: it is not extracted, and its row says why.

File names pass through :func:`notebook_name`, which undoes what browsers, Colab and LMSs do
to them (``Copy of X.ipynb``, ``X (1).ipynb``, ``X-1.ipynb``), so a file maps back to its
release notebook. Nothing here parses a notebook: that is :mod:`autograder.restore`'s job.
"""

from __future__ import annotations

import re
import stat
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

FLAT_SEPARATOR = "--"
DEFAULT_ID_PATTERN = (r"^(?:.*/)?(?P<name>[^/_]+)_(?:LATE_)?(?P<student>\d+)_(?:\d+_)?"
                      r"(?P<notebook>[^/]+)$")
MAX_MEMBER_BYTES = 64 * 2**20
_COPY_OF = re.compile(r"^(copy of\s+)+", re.IGNORECASE)
_DUPLICATE = re.compile(r"(\s*\(\d+\))+$")
_RESUBMITTED = re.compile(r"-\d+$")  # Canvas renames a second upload start.ipynb -> start-1.ipynb


def notebook_name(filename: str) -> str:
    """``"Copy of start (2).ipynb"`` -> ``"start"``."""
    stem = filename[: -len(".ipynb")] if filename.lower().endswith(".ipynb") else filename
    return _DUPLICATE.sub("", _COPY_OF.sub("", stem.strip())).strip()


@dataclass(frozen=True)
class Submitted:
    """One file handed in: who, for which notebook (None if it matches none), and where."""

    student: str
    notebook: str | None
    path: Path
    original_name: str  # the file's name as handed in, less the student prefix of a flat folder
    problem: str = ""  # why the file was refused without being read ("" when it can be read)
    mtime: float = 0.0  # when it was handed in (file or zip member time), to choose among several


def _match(name: str, known: list[str]) -> str | None:
    folded = {k.casefold(): k for k in known}
    for candidate in (name, _RESUBMITTED.sub("", name)):
        if candidate in known:
            return candidate
        if candidate.casefold() in folded:
            return folded[candidate.casefold()]
    return None


def id_pattern(pattern: str | None) -> re.Pattern:
    """The compiled ``--id-pattern``, or a clear error when it is not usable."""
    try:
        compiled = re.compile(pattern or DEFAULT_ID_PATTERN)
    except re.error as error:
        raise SystemExit(f"error: --id-pattern is not a valid regular expression: {error}") from None
    if "student" not in compiled.groupindex:
        raise SystemExit("error: --id-pattern needs a named group for the student id, "
                         "e.g. '^(?P<student>[^_]+)_(?P<notebook>.+)$'")
    return compiled


def find(submissions: Path, assignment: str, known: list[str], *, pattern: str | None = None,
         extract_to: Path | None = None) -> list[Submitted]:
    """Every notebook file handed in for ``assignment``, in a stable order.

    ``pattern`` and ``extract_to`` (a folder the caller owns and removes) serve a zip.
    """
    submissions = Path(submissions)
    if submissions.is_file():
        if not zipfile.is_zipfile(submissions):
            raise SystemExit(f"error: {submissions} is a file but not a zip archive. Give a folder "
                             f"(<student>/{assignment}/<notebook>.ipynb or <student>"
                             f"{FLAT_SEPARATOR}<notebook>.ipynb) or a zip downloaded from an LMS.")
        if extract_to is None:
            raise ValueError("a zip of submissions needs a folder to read its members into")
        return _from_zip(submissions, known, id_pattern(pattern), Path(extract_to))
    if not submissions.is_dir():
        raise SystemExit(f"error: {submissions} is neither a folder of submissions nor a zip of them")
    nbgrader_layout = [d for d in submissions.iterdir() if (d / assignment).is_dir()]
    found: list[Submitted] = []
    if pattern is not None and not nbgrader_layout:
        return _from_folder(submissions, known, id_pattern(pattern))
    if nbgrader_layout:
        for student_dir in sorted(nbgrader_layout):
            for path in sorted((student_dir / assignment).glob("*.ipynb")):
                found.append(Submitted(student_dir.name, _match(notebook_name(path.name), known),
                                       path, path.name, mtime=path.stat().st_mtime))
    else:
        for path in sorted(submissions.glob("*.ipynb")):
            student, sep, rest = path.name.partition(FLAT_SEPARATOR)
            if not sep or not student.strip():
                raise SystemExit(
                    f"error: cannot tell whose file {path.name!r} is. Name flat submissions "
                    f"'<student>{FLAT_SEPARATOR}<notebook>.ipynb', use nbgrader's layout "
                    f"<student>/{assignment}/<notebook>.ipynb, give the LMS's zip itself, or give "
                    "--id-pattern, a regular expression on the file names with a named group "
                    "'student' (e.g. --id-pattern '^(?P<student>[^_]+)_(?P<notebook>.+)$')."
                )
            found.append(Submitted(student.strip(), _match(notebook_name(rest), known),
                                   path, rest, mtime=path.stat().st_mtime))
    return found


def _refusal(info: zipfile.ZipInfo) -> str:
    """Why a zip member must not be read, or "" when it may."""
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        return f"refused: the archive member {info.filename!r} has a path that escapes the archive"
    if stat.S_ISLNK(info.external_attr >> 16):
        return f"refused: the archive member {info.filename!r} is a link, not a file"
    if info.flag_bits & 0x1:
        return f"refused: the archive member {info.filename!r} is encrypted"
    if info.file_size > MAX_MEMBER_BYTES:
        return (f"refused: the archive member {info.filename!r} is larger than "
                f"{MAX_MEMBER_BYTES // 2**20} MB")
    return ""


def _from_folder(folder: Path, known: list[str], pattern: re.Pattern) -> list[Submitted]:
    """A folder of files named any way, read with ``--id-pattern`` on their relative paths."""
    found: list[Submitted] = []
    unattributed: list[str] = []
    for path in sorted(folder.rglob("*.ipynb")):
        name = path.relative_to(folder).as_posix()
        if any(part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(name).parts):
            continue
        match = pattern.match(name)
        if not match or not (match.group("student") or "").strip():
            unattributed.append(name)
            continue
        handed_in = (match.groupdict().get("notebook") or name[match.end():] or path.name).strip()
        found.append(Submitted(match.group("student").strip(),
                               _match(notebook_name(PurePosixPath(handed_in).name), known),
                               path, handed_in, mtime=path.stat().st_mtime))
    if unattributed:
        shown = ", ".join(repr(n) for n in unattributed[:3]) + (" ..." if len(unattributed) > 3 else "")
        raise SystemExit(f"error: --id-pattern does not match {shown} in {folder} "
                         f"({len(unattributed)} notebooks): give a pattern that fits every file name")
    found.sort(key=lambda f: (f.student, f.original_name, str(f.path)))
    return found


def _from_zip(archive: Path, known: list[str], pattern: re.Pattern, folder: Path) -> list[Submitted]:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as error:
        raise SystemExit(f"error: cannot open the zip {archive}: {error}") from None
    folder.mkdir(parents=True, exist_ok=True)
    found: list[Submitted] = []
    unattributed: list[str] = []
    with zf:
        for number, info in enumerate(zf.infolist()):
            name = info.filename.replace("\\", "/")
            base = PurePosixPath(name).name
            if (info.is_dir() or not base.lower().endswith(".ipynb") or base.startswith(".")
                    or name.startswith("__MACOSX/")):
                continue
            problem = _refusal(info)
            match = pattern.match(name)
            if not match or not (match.group("student") or "").strip():
                if problem:  # refused, and whose it is cannot be told: reported all the same
                    found.append(Submitted("(unknown)", None, archive, base, problem))
                else:
                    unattributed.append(info.filename)
                continue
            handed_in = (match.groupdict().get("notebook") or name[match.end():] or base).strip()
            path = folder / f"{number:05d}.ipynb"
            if not problem:
                try:
                    with zf.open(info) as member:
                        data = member.read(MAX_MEMBER_BYTES + 1)
                    if len(data) > MAX_MEMBER_BYTES:
                        problem = (f"refused: the archive member {info.filename!r} is larger than "
                                   f"{MAX_MEMBER_BYTES // 2**20} MB")
                    else:
                        path.write_bytes(data)
                except (zipfile.BadZipFile, zlib.error, OSError, RuntimeError, NotImplementedError,
                        EOFError) as error:
                    problem = f"the archive member {info.filename!r} cannot be read: {error}"
            try:
                mtime = time.mktime((*info.date_time, 0, 0, -1))
            except (OverflowError, ValueError):
                mtime = 0.0
            found.append(Submitted(match.group("student").strip(),
                                   _match(notebook_name(PurePosixPath(handed_in).name), known),
                                   path, handed_in, problem, mtime))
    if unattributed:
        shown = ", ".join(repr(n) for n in unattributed[:3]) + (" ..." if len(unattributed) > 3 else "")
        raise SystemExit(
            f"error: cannot tell whose file {shown} is in {archive.name} ({len(unattributed)} of its "
            f"notebooks). The student id is read from each member's path with --id-pattern "
            f"(default, for Canvas names like 'smithjane_12345_67890_start.ipynb': "
            f"{DEFAULT_ID_PATTERN!r}); give one that fits this LMS's names, with a named group "
            "'student' and optionally 'notebook'.")
    found.sort(key=lambda f: (f.student, f.original_name, f.path.name))
    return found
