"""The page's two plots, drawn with matplotlib into arrays (no pyplot, no global state).

- :func:`posterior_chart`: per latent unit, the posterior's mean with its spread as an error bar, and for
  a variational model the prior N(0, 1) as a band;
- :class:`Scatter`: a scatter of 2-D points (the test codes' PCA projection) coloured by label, which also
  maps a clicked pixel of its picture back to the nearest point, so a click on the page decodes that code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Size of the pictures, in pixels at ``DPI``.
CHART_SIZE, SCATTER_SIZE, DPI = (640, 300), (520, 480), 100
#: Up to this many units, every unit gets its tick on the chart's axis.
MAX_TICKS = 32


def _figure(size: tuple[int, int]) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)


def _pixels(fig: Figure) -> np.ndarray:
    """The figure rendered to an RGB uint8 array (H, W, 3)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def posterior_chart(mean: Tensor, spread: Tensor, *, unit: str, spread_name: str, prior: bool,
                    title: str) -> np.ndarray:
    """Error bars of ``mean`` +- ``spread`` per unit (a latent or a channel), on one axis; with ``prior`` a
    grey band where N(0, 1) puts 95% of its mass, the code a variational posterior is pulled towards."""
    fig = _figure(CHART_SIZE)
    ax = fig.add_axes((0.09, 0.17, 0.89, 0.72))
    units = np.arange(len(mean))
    if prior:
        ax.axhspan(-1.96, 1.96, color="0.9", label="prior N(0, 1), 95%")
    ax.errorbar(units, mean.float().numpy(), yerr=spread.float().numpy(), fmt="o", color="tab:blue",
                ecolor="tab:orange", elinewidth=3, capsize=3, label=f"mean +- {spread_name}")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.margins(y=0.12)
    if len(units) <= MAX_TICKS:
        ax.set_xticks(units)
    ax.tick_params(labelsize=8)
    ax.set(xlabel=unit, title=title)
    ax.title.set_fontsize(10)
    ax.legend(fontsize=8, loc="upper right")
    return _pixels(fig)


@dataclass
class Scatter:
    """Points (N, 2) coloured by ``labels``, drawn once; :meth:`nearest` maps a clicked pixel to a point."""

    points: Tensor
    labels: Tensor | None
    title: str
    axes: tuple[str, str]
    picture: np.ndarray = field(init=False, repr=False)
    _pixel_points: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        fig = _figure(SCATTER_SIZE)
        ax = fig.add_axes((0.12, 0.1, 0.7, 0.78))
        self._draw(ax)
        self.picture = _pixels(fig)
        # Display coordinates have their origin bottom-left; a picture's pixel rows count from the top.
        xy = ax.transData.transform(self.points.double().numpy())
        self._pixel_points = np.stack([xy[:, 0], self.picture.shape[0] - xy[:, 1]], axis=1)

    def _draw(self, ax: Axes) -> None:
        import matplotlib

        points = self.points.float().numpy()
        if self.labels is None:
            ax.scatter(points[:, 0], points[:, 1], s=5, alpha=0.6)
        else:
            classes = sorted(set(self.labels.tolist()))
            colours = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
            for i, k in enumerate(classes):
                mask = (self.labels == k).numpy()
                ax.scatter(points[mask, 0], points[mask, 1], s=5, alpha=0.6, color=colours(i % colours.N),
                           label=str(k))
            ax.legend(title="label", markerscale=3, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                      frameon=False)
        ax.set(xlabel=self.axes[0], ylabel=self.axes[1], title=self.title)
        ax.title.set_fontsize(9)
        ax.tick_params(labelsize=8)

    def nearest(self, x: int, y: int) -> tuple[int, float]:
        """The point drawn nearest to pixel (x, y) of :attr:`picture`, and its distance in pixels."""
        distances = np.hypot(self._pixel_points[:, 0] - x, self._pixel_points[:, 1] - y)
        index = int(distances.argmin())
        return index, float(distances[index])
