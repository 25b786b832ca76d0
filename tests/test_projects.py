"""The Part 3 project specs: architecture -> canonical parameter shapes, and initial weights
that every implementation loads from one committed, checksummed file."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from gradschool import data, projects
from gradschool.projects import spec as spec_module
from gradschool.projects.__main__ import main as projects_cli
from gradschool.projects.spec import LSTM, Conv2D, Dense, Embedding, Flatten, MaxPool, Optimizer, Spec


def tiny(layers, input_shape, name="tiny"):
    return Spec(name=name, title="a test", dataset="digits", input_shape=input_shape, layers=layers,
                optimizer=Optimizer("adam", 1e-3), batch_size=4, epochs=1, metric="accuracy", target=0.5)


def test_the_tabular_and_image_architectures():
    tabular, images = projects.load("tabular"), projects.load("images")
    assert tabular.parameter_shapes() == {"dense_0/kernel": (4, 16), "dense_0/bias": (16,),
                                          "dense_1/kernel": (16, 3), "dense_1/bias": (3,)}
    assert tabular.output_shape() == (3,) and tabular.parameter_count() == 4 * 16 + 16 + 16 * 3 + 3
    assert images.parameter_shapes() == {
        "conv_0/kernel": (3, 3, 1, 12), "conv_0/bias": (12,), "conv_1/kernel": (3, 3, 12, 24),
        "conv_1/bias": (24,), "dense_0/kernel": (7 * 7 * 24, 10), "dense_0/bias": (10,)}
    assert images.output_shape() == (10,)


@pytest.mark.parametrize("name", projects.PROJECTS)
def test_every_spec_fits_its_dataset(name):
    spec = projects.load(name)
    assert spec.name == name and set(spec.implementations) <= set(spec_module.FRAMEWORKS)
    splits = data.load(spec.dataset)
    x = splits.train.x
    if spec.alphabet:  # text: strings that encode to input_shape tokens
        assert spec.encode(x)[0].shape == (len(x), *spec.input_shape)
        assert spec.output_shape()[-1] == len(spec.alphabet)
    else:  # images come without their channel axis
        assert x.shape[1:] in (tuple(spec.input_shape), tuple(spec.input_shape[:-1]))
    if splits.classes is not None and spec.metric == "accuracy":  # one logit per class kept
        assert spec.output_shape()[-1] == len(spec.classes or splits.classes)
    if spec.metric == "accuracy":
        assert 0 < spec.target <= 1 and spec.higher_is_better
    else:
        assert spec.metric == "loss" and spec.target > 0 and not spec.higher_is_better
    assert spec.target_split in data.SPLITS


@pytest.mark.parametrize("name", projects.PROJECTS)
def test_initial_weights_come_from_the_committed_file(name):
    spec = projects.load(name)
    weights = spec.initial_weights()
    assert list(weights) == list(spec.parameter_shapes())
    for key, value in weights.items():
        assert isinstance(value, np.ndarray) and value.dtype == np.float32
        assert value.shape == spec.parameter_shapes()[key]
    assert hashlib.sha256(spec.weights_path.read_bytes()).hexdigest() == spec.weights_sha256
    fresh = spec.make_initial_weights()  # this NumPy still makes the same numbers
    for key in weights:
        np.testing.assert_array_equal(weights[key], fresh[key])


def test_initialisation_scales():
    spec = tiny((Conv2D(8, 3), MaxPool(2), Flatten(), Dense(10)), (6, 6, 2))
    weights = spec.make_initial_weights()
    limit = np.sqrt(6 / (2 * 9 + 8 * 9))
    kernel = weights["conv_0/kernel"]
    assert kernel.shape == (3, 3, 2, 8) and np.abs(kernel).max() <= limit
    assert abs(kernel.std() - limit / np.sqrt(3)) < 0.2 * limit
    assert not weights["conv_0/bias"].any() and not weights["dense_0/bias"].any()
    assert weights["dense_0/kernel"].shape == (3 * 3 * 8, 10)


def test_a_sequence_model_and_the_lstm_forget_bias():
    spec = tiny((Embedding(27, 8), LSTM(16), Dense(27)), (12,))
    assert spec.parameter_shapes() == {
        "embedding_0/table": (27, 8), "lstm_0/kernel": (8, 64), "lstm_0/recurrent": (16, 64),
        "lstm_0/bias": (64,), "dense_0/kernel": (16, 27), "dense_0/bias": (27,)}
    assert spec.output_shape() == (12, 27)
    bias = spec.make_initial_weights()["lstm_0/bias"]
    np.testing.assert_array_equal(bias, np.r_[np.zeros(16), np.ones(16), np.zeros(32)].astype(np.float32))


def test_bad_architectures_and_names_are_refused():
    with pytest.raises(ValueError, match="Flatten"):
        tiny((Conv2D(4), Dense(3)), (8, 8, 1)).parameter_shapes()
    with pytest.raises(ValueError, match="tabular"):
        projects.load("tabulr")


def test_a_missing_damaged_or_stale_weights_file_is_explained(tmp_path, monkeypatch):
    monkeypatch.setattr(spec_module, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(spec_module, "REPOSITORY_ROOT", tmp_path)
    spec = projects.load("tabular")
    with pytest.raises(ValueError, match="save-weights tabular"):
        spec.initial_weights()
    digest = spec_module.save_weights(spec)
    assert digest == spec.weights_sha256  # the same bytes as the committed file
    assert sorted(spec.initial_weights()) == sorted(spec.parameter_shapes())
    raw = bytearray(spec.weights_path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    spec.weights_path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="git checkout"):
        spec.initial_weights()
    wider = dataclasses.replace(spec, layers=(Dense(32, activation="relu"), Dense(3)))
    spec_module.save_weights(spec)
    with pytest.raises(ValueError, match="architecture needs"):
        dataclasses.replace(wider, weights_sha256=digest).initial_weights()


def test_the_save_weights_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(spec_module, "WEIGHTS_DIR", tmp_path)
    projects_cli(["save-weights", "tabular"])
    out = capsys.readouterr().out
    assert "matches the spec" in out and (tmp_path / "tabular.npz").exists()


def test_a_reference_checks_types_and_shapes_before_values(tmp_path, monkeypatch):
    monkeypatch.setattr(spec_module, "WEIGHTS_DIR", tmp_path)
    spec = projects.load("tabular")
    with pytest.raises(ValueError, match="save-reference tabular"):
        spec.reference()
    grads = {name: np.full(shape, 0.5) for name, shape in spec.parameter_shapes().items()}
    spec_module.save_reference(spec, 1.25, grads)
    reference = spec.reference()
    assert reference.loss == 1.25 and set(reference.gradients) == set(grads)
    reference.check(1.25 + 5e-5, {name: g.astype(np.float32) for name, g in grads.items()})

    class Anything(float):
        def __eq__(self, other):
            return True

        def __sub__(self, other):
            return Anything(0.0)

    bad_cases = [
        (float("nan"), grads, "loss"),
        (1.3, grads, "loss"),
        (1.25, {**grads, "extra": np.zeros(1)}, "keys"),
        (1.25, [g for g in grads.values()], "dict"),
        (1.25, {**grads, "dense_0/kernel": np.full((16, 4), 0.5)}, "shape"),
        (1.25, {**grads, "dense_1/bias": np.full(3, 0.5 + 2e-4)}, "dense_1/bias"),
        (1.25, {**grads, "dense_1/bias": np.array([0.5, 0.5, np.nan])}, "dense_1/bias"),
        (1.25, {**grads, "dense_0/bias": Anything(0.5)}, "shape"),
    ]
    for loss, gradients, message in bad_cases:
        with pytest.raises(AssertionError, match=message):
            reference.check(loss, gradients)
    with pytest.raises(ValueError, match="architecture"):
        spec_module.save_reference(spec, 1.0, {"dense_0/kernel": np.zeros((4, 16))})
    spec.reference_path.write_bytes(b"not a numpy archive")
    with pytest.raises(ValueError, match="cannot be read"):
        spec.reference()


def test_prepare_standardises_with_the_training_statistics_only():
    spec = projects.load("tabular")
    prepared = spec.prepare()
    raw = data.load(spec.dataset)
    assert list(prepared) == list(data.SPLITS)
    for name in data.SPLITS:
        x, y = prepared[name]
        assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape == getattr(raw, name).x.shape
    x_train = prepared["train"][0]
    np.testing.assert_allclose(x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(x_train.std(axis=0), 1, atol=1e-5)
    mean, std = raw.train.x.mean(axis=0, dtype=np.float64), raw.train.x.std(axis=0, dtype=np.float64)
    np.testing.assert_allclose(prepared["test"][0], (raw.test.x - mean) / std, rtol=1e-6, atol=1e-6)
    x, y = spec.first_batch()
    assert x.shape == (spec.batch_size, 4) and np.array_equal(y, prepared["train"][1][:spec.batch_size])


def test_prepare_gives_images_their_channel_axis_unscaled():
    spec = projects.load("images")
    x, y = spec.prepare()["val"]
    raw = data.load(spec.dataset).val
    assert x.shape == (*raw.x.shape, 1) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(x[..., 0], raw.x)


def test_text_is_encoded_as_next_character_targets():
    spec = projects.load("sequences")
    x, y = spec.encode(["ab", "zoe"])
    assert x.dtype == y.dtype == np.int64 and x.shape == y.shape == (2, 12)
    assert x[0].tolist() == [0, 1, 2] + [0] * 9 and y[0].tolist() == [1, 2, 0] + [-1] * 9
    assert x[1, :4].tolist() == [0, 26, 15, 5] and y[1, :4].tolist() == [26, 15, 5, 0]
    for bad in ["a" * 12, "anne-marie", "o.k"]:
        with pytest.raises(ValueError, match="sequences"):
            spec.encode([bad])
    prepared = spec.prepare()
    raw = data.load(spec.dataset)
    for name in data.SPLITS:
        inputs, targets = prepared[name]
        assert inputs.shape == (len(getattr(raw, name).x), 12)
        assert ((targets >= 0).sum(axis=1) == np.char.str_len(getattr(raw, name).x) + 1).all()


def test_classes_are_kept_and_renumbered_in_their_order():
    spec = dataclasses.replace(projects.load("images"), classes=(7, 2))
    raw, prepared = data.load("mnist"), spec.prepare()
    for name in data.SPLITS:
        y_raw = getattr(raw, name).y
        x, y = prepared[name]
        assert x.shape == (int(np.isin(y_raw, (7, 2)).sum()), 28, 28, 1) and y.dtype == np.int64
        np.testing.assert_array_equal(y, np.where(y_raw[np.isin(y_raw, (7, 2))] == 7, 0, 1))
    np.testing.assert_array_equal(prepared["test"][0][:, :, :, 0], raw.test.x[np.isin(raw.test.y, (7, 2))])


def test_few_labels_come_in_disjoint_draws_from_the_training_split_only():
    from gradschool.projects import transfer

    spec = transfer.FINETUNE
    assert spec.labels_per_class == 2 and len(spec.classes) == 5
    raw_train = data.load("mnist").train
    seen = set()
    for draw, drawn in enumerate(transfer.draws()):
        prepared = drawn.prepare()
        x, y = prepared["train"]
        assert x.shape == (10, 28, 28, 1)
        assert np.bincount(y, minlength=5).tolist() == [2] * 5
        rows = {int(np.flatnonzero((raw_train.x == image).all(axis=(1, 2)))[0]) for image in x[..., 0]}
        assert rows.isdisjoint(seen), "the draws should use different examples"
        seen |= rows
        expected = {int(row) for c in spec.classes
                    for row in np.flatnonzero(raw_train.y == c)[2 * draw:2 * draw + 2]}
        assert rows == expected, f"draw {draw}: examples 2*draw and 2*draw+1 of each class, in split order"
        assert len(prepared["test"][1]) == int(np.isin(data.load("mnist").test.y, spec.classes).sum())
    with pytest.raises(ValueError, match="label draw 1000"):
        dataclasses.replace(spec, label_draw=1000).prepare()


def test_trainable_names_layers_and_is_checked():
    from gradschool.projects import transfer

    assert transfer.FINETUNE.trainable_parameters() == ("dense_0/kernel", "dense_0/bias")
    assert transfer.SPEC.trainable_parameters() == tuple(transfer.SPEC.parameter_shapes())
    with pytest.raises(ValueError, match="pool_0"):
        dataclasses.replace(transfer.FINETUNE, trainable=("pool_0",)).trainable_parameters()


def test_transfer_shares_one_set_of_initial_weights():
    from gradschool.projects import transfer

    assert transfer.FINETUNE.weights_path == transfer.SPEC.weights_path
    assert transfer.FINETUNE.parameter_shapes() == transfer.SPEC.parameter_shapes()
    assert 0 < transfer.MIN_GAIN < 1 and transfer.DRAWS >= 3
