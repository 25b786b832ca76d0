"""The pictures the notebooks share: loss curves, image grids and decision boundaries.

Each function draws with matplotlib and returns what it drew on (an ``Axes``, or the
``Figure`` of a grid), so a notebook can add to the picture and a test can inspect it.
Arrays may come from NumPy, CuPy, PyTorch, TensorFlow or JAX: :func:`to_numpy` brings
them to the CPU first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

__all__ = ["decision_boundary", "image_grid", "loss_curves", "to_numpy"]


def to_numpy(array) -> np.ndarray:
    """Any array (NumPy, CuPy, PyTorch, TensorFlow, JAX) as a NumPy array on the CPU."""
    module = type(array).__module__
    if module.startswith("cupy"):
        return array.get()
    if module.startswith("torch"):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _values(values) -> np.ndarray:
    """A curve as a 1-D float array; a list may hold 0-d tensors (``losses.append(loss)``)."""
    if isinstance(values, list | tuple):
        return np.array([float(to_numpy(v)) for v in values], dtype=np.float64)
    return to_numpy(values).astype(np.float64).ravel()


def loss_curves(curves: Mapping[str, Sequence[float]] | Sequence[float], ax=None,
                log: bool = False, *, xlabel: str = "step", ylabel: str = "loss",
                title: str | None = None):
    """Plot one curve per entry of ``{"label": losses, ...}`` against the step (1, 2, ...).

    ``log=True`` uses a log scale for the loss, where the late, slow part of training is
    visible. A bare list of losses is plotted as one curve called "loss".
    """
    if not isinstance(curves, Mapping):
        curves = {"loss": curves}
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for label, values in curves.items():
        y = _values(values)
        ax.plot(np.arange(1, len(y) + 1), y, label=str(label))
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend()
    return ax


def _images(images) -> np.ndarray:
    """Images as (n, h, w) or (n, h, w, 3|4); flat square images and channels-first are fixed."""
    images = to_numpy(images)
    if images.ndim == 2:  # (n, h*w), flattened square images
        side = math.isqrt(images.shape[1])
        if side * side != images.shape[1]:
            raise ValueError(f"image_grid got flat images of {images.shape[1]} values, which is "
                             f"not a square; reshape them to (n, height, width) first")
        images = images.reshape(len(images), side, side)
    if images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3, 4):
        images = images.transpose(0, 2, 3, 1)  # (n, c, h, w), as PyTorch stores them
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (3, 4)):
        raise ValueError(f"image_grid needs images of shape (n, height, width) or "
                         f"(n, height, width, 3), not {images.shape}")
    return images


def image_grid(images, labels=None, ncols: int = 8, title: str | None = None, *,
               cmap: str = "gray", size: float = 1.2):
    """Show ``images`` in a grid, ``ncols`` wide, each titled with its label; return the Figure.

    Grey-scale images share one colour scale (the darkest pixel of all is black), so
    brightness can be compared between them.
    """
    images = _images(images)
    n = len(images)
    if n == 0:
        raise ValueError("image_grid got no images")
    if labels is not None and len(labels) != n:
        raise ValueError(f"image_grid got {n} images but {len(labels)} labels")
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3),
                             squeeze=False)
    grey = images.ndim == 3
    low, high = (float(images.min()), float(images.max())) if grey else (None, None)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i >= n:
            continue
        ax.imshow(images[i], cmap=cmap if grey else None, vmin=low, vmax=high,
                  interpolation="nearest")
        if labels is not None:
            ax.set_title(str(labels[i]), fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def decision_boundary(predict: Callable, x, y, ax=None, *, resolution: int = 200,
                      padding: float = 0.1, title: str | None = None):
    """Colour the plane by what ``predict`` says, and draw the points ``x`` coloured by ``y``.

    ``x`` has shape (n, 2). ``predict`` takes an (m, 2) array of points and returns a
    label per point, shape (m,), or one score per class, shape (m, k), whose largest
    entry is the label. Points whose colour differs from the region they sit in are the
    ones the model gets wrong.
    """
    x = to_numpy(x)
    y = to_numpy(y).ravel()
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"decision_boundary draws points in the plane: x should have shape "
                         f"(n, 2), not {x.shape}")
    if len(y) != len(x):
        raise ValueError(f"decision_boundary got {len(x)} points but {len(y)} labels")
    low, high = x.min(axis=0), x.max(axis=0)
    pad = (high - low) * padding + 1e-9
    gx, gy = np.meshgrid(np.linspace(low[0] - pad[0], high[0] + pad[0], resolution),
                         np.linspace(low[1] - pad[1], high[1] + pad[1], resolution))
    dtype = x.dtype if x.dtype.kind == "f" else np.float64
    grid = np.column_stack([gx.ravel(), gy.ravel()]).astype(dtype)
    z = to_numpy(predict(grid))
    if z.ndim == 2:
        z = z.argmax(axis=1) if z.shape[1] > 1 else z[:, 0]
    if z.shape != (len(grid),):
        raise ValueError(f"predict should return one label per point, shape ({len(grid)},), "
                         f"or scores of shape ({len(grid)}, classes); it returned {z.shape}")
    classes = np.unique(np.concatenate([y, z]))
    colours = ListedColormap([plt.get_cmap("tab10")(i % 10) for i in range(len(classes))])
    region = np.searchsorted(classes, z).reshape(gx.shape)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4.5))
    ax.contourf(gx, gy, region, levels=np.arange(len(classes) + 1) - 0.5, cmap=colours,
                alpha=0.3)
    point = np.searchsorted(classes, y)
    for index, label in enumerate(classes):
        mine = point == index
        if mine.any():
            ax.scatter(x[mine, 0], x[mine, 1], color=colours(index), edgecolors="k",
                       linewidths=0.5, s=20, label=str(label))
    ax.legend(title="class", fontsize=8)
    if title:
        ax.set_title(title)
    return ax
