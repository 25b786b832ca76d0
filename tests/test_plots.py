"""gradschool.plots draws what it is given, returns something to inspect, and refuses
inputs it cannot draw with a message that says what shape it needs."""

import matplotlib

matplotlib.use("Agg")  # no display in tests

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from gradschool import plots  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# ---------------------------------------------------------------- loss curves


def test_loss_curves_one_line_per_label():
    ax = plots.loss_curves({"sgd": [3.0, 2.0, 1.5], "adam": np.array([3.0, 1.0, 0.5, 0.2])})
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["sgd", "adam"]
    np.testing.assert_array_equal(lines[1].get_xdata(), [1, 2, 3, 4])
    np.testing.assert_array_equal(lines[1].get_ydata(), [3.0, 1.0, 0.5, 0.2])
    assert ax.get_yscale() == "linear"
    assert ax.get_legend() is not None
    assert ax.get_xlabel() == "step" and ax.get_ylabel() == "loss"


def test_loss_curves_log_scale_existing_axes_and_bare_list():
    fig, ax = plt.subplots()
    out = plots.loss_curves([1.0, 0.1, np.float32(0.01)], ax=ax, log=True, title="t")
    assert out is ax
    assert ax.get_yscale() == "log"
    assert ax.get_lines()[0].get_label() == "loss"
    assert ax.get_title() == "t"


def test_loss_curves_accepts_lists_of_zero_dim_arrays():
    losses = [np.array(2.0), np.array(1.0)]
    ax = plots.loss_curves({"engine": losses})
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), [2.0, 1.0])


def test_loss_curves_accept_torch_tensors():
    torch = pytest.importorskip("torch")
    losses = [torch.tensor(2.0, requires_grad=True) * 1, torch.tensor(1.0)]
    ax = plots.loss_curves({"torch": losses, "as tensor": torch.tensor([3.0, 2.0])})
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), [2.0, 1.0])


# ---------------------------------------------------------------- image grids


def test_image_grid_layout_and_titles():
    images = np.random.default_rng(0).random((10, 8, 8)).astype(np.float32)
    fig = plots.image_grid(images, labels=list(range(10)), ncols=4, title="digits")
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len(fig.axes) == 12  # 3 rows of 4
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 10
    assert [ax.get_title() for ax in shown] == [str(i) for i in range(10)]
    assert fig._suptitle.get_text() == "digits"
    # one shared grey scale, so brightness can be compared between images
    assert {ax.images[0].get_clim() for ax in shown} == {(images.min(), images.max())}


@pytest.mark.parametrize(
    "shape, shown",
    [((5, 64), (8, 8)), ((3, 1, 28, 28), (28, 28)), ((3, 28, 28, 1), (28, 28)),
     ((2, 3, 16, 16), (16, 16, 3)), ((2, 16, 16, 3), (16, 16, 3))],
)
def test_image_grid_fixes_common_layouts(shape, shown):
    fig = plots.image_grid(np.random.default_rng(1).random(shape))
    assert fig.axes[0].images[0].get_array().shape == shown


def test_image_grid_fewer_images_than_columns():
    fig = plots.image_grid(np.zeros((3, 4, 4)), ncols=8)
    assert len(fig.axes) == 3


@pytest.mark.parametrize(
    "images, labels, match",
    [(np.zeros((4, 10)), None, "not a square"), (np.zeros((0, 8, 8)), None, "no images"),
     (np.zeros((3, 8, 8)), [1, 2], "3 images but 2 labels"), (np.zeros(5), None, "shape")],
)
def test_image_grid_refuses_what_it_cannot_draw(images, labels, match):
    with pytest.raises(ValueError, match=match):
        plots.image_grid(images, labels=labels)


# ---------------------------------------------------------- decision boundary


def blobs():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(-2, 0.5, (20, 2)), rng.normal(2, 0.5, (20, 2))])
    y = np.repeat([0, 1], 20)
    return x, y


def test_decision_boundary_with_labels():
    x, y = blobs()
    seen = []

    def predict(points):
        seen.append(points.shape)
        return (points[:, 0] > 0).astype(int)

    ax = plots.decision_boundary(predict, x, y, resolution=50, title="linear")
    assert seen == [(2500, 2)]
    assert len(ax.collections) >= 3  # the filled regions and one scatter per class
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["0", "1"]
    assert ax.get_title() == "linear"
    low, high = ax.get_xlim()
    assert low < x[:, 0].min() and high > x[:, 0].max()


def test_decision_boundary_with_scores_and_given_axes():
    x, y = blobs()
    fig, ax = plt.subplots()
    out = plots.decision_boundary(lambda p: np.stack([-p[:, 0], p[:, 0]], axis=1), x, y,
                                  ax=ax, resolution=20)
    assert out is ax


def test_decision_boundary_more_than_ten_classes():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 2))
    y = np.arange(60) % 12
    plots.decision_boundary(lambda p: (np.abs(p[:, 0] * 6).astype(int) % 12), x, y,
                            resolution=20)


@pytest.mark.parametrize(
    "x, y, predict, match",
    [(np.zeros((5, 3)), np.zeros(5), lambda p: p[:, 0], r"shape \(n, 2\)"),
     (np.zeros((5, 2)), np.zeros(4), lambda p: p[:, 0], "5 points but 4 labels"),
     (np.zeros((5, 2)), np.zeros(5), lambda p: p[:3, 0], "one label per point")],
)
def test_decision_boundary_refuses_bad_input(x, y, predict, match):
    with pytest.raises(ValueError, match=match):
        plots.decision_boundary(predict, x, y, resolution=10)


def test_to_numpy():
    assert isinstance(plots.to_numpy([1, 2]), np.ndarray)
    a = np.ones(2)
    assert plots.to_numpy(a) is a
