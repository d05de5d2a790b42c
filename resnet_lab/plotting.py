"""One look for every figure of the suite: theme, fixed colours, labels, atomic saving.

V1 and V2 keep the same colours in every figure (so a reader never re-learns a legend), and
the five unit kinds of He et al. 2016 Table 2 reuse them: ``original`` is V1's colour,
``full_preact`` V2's. Colours are Okabe–Ito, which stay distinct for colour-blind readers.
Figures are drawn with the non-interactive Agg backend, so plotting works on a headless
machine and never opens a window.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

V1_COLOR = "#D55E00"  # vermillion
V2_COLOR = "#0072B2"  # blue
VERSION_COLORS = {"V1": V1_COLOR, "V2": V2_COLOR}
UNIT_COLORS = {
    "original": V1_COLOR,
    "bn_after_add": "#E69F00",      # orange
    "relu_before_add": "#009E73",   # green
    "relu_only_preact": "#CC79A7",  # purple
    "full_preact": V2_COLOR,
}
VERSION_LABELS = {"V1": "V1 (post-activation)", "V2": "V2 (pre-activation)"}
UNIT_LABELS = {
    "original": "original (V1)",
    "bn_after_add": "BN after addition",
    "relu_before_add": "ReLU before addition",
    "relu_only_preact": "ReLU-only pre-activation",
    "full_preact": "full pre-activation (V2)",
}
AXIS_LABELS = {
    "unit": "unit index",
    "depth": "depth (layers)",
    "step": "iteration",
    "epoch": "epoch",
    "seed": "seed",
}
STAGE_LINE = dict(color="0.55", linestyle="--", linewidth=0.8, zorder=0)
DPI = 200


def set_style() -> None:
    """The suite's seaborn theme; call once before drawing."""
    sns.set_theme(context="paper", style="whitegrid",
                  palette=[V1_COLOR, V2_COLOR, *list(UNIT_COLORS.values())[1:4]],
                  rc={"axes.spines.top": False, "axes.spines.right": False,
                      "savefig.dpi": DPI, "savefig.bbox": "tight", "figure.dpi": 100,
                      "legend.frameon": False})


def version_palette() -> dict:
    """Seaborn ``palette=`` for ``hue="version"`` with values "V1" / "V2"."""
    return dict(VERSION_COLORS)


def unit_palette() -> dict:
    """Seaborn ``palette=`` for ``hue="unit_kind"`` (the five kinds of He et al. Table 2)."""
    return dict(UNIT_COLORS)


def mark_stage_boundaries(ax, boundaries, *, offset=-0.5, label="stage boundary") -> None:
    """Dashed vertical lines where a new stage (a dimension change) begins.

    ``boundaries`` are the unit indices that start a new stage; the line sits ``offset``
    (half a unit) before each, between the two stages. Only the first line carries
    ``label``, so a legend lists it once.
    """
    for i, b in enumerate(sorted(boundaries)):
        ax.axvline(b + offset, label=label if i == 0 else None, **STAGE_LINE)


def save_figure(fig, folder, name) -> list[Path]:
    """Write ``folder/name.png`` (dpi 200) and ``folder/name.pdf`` atomically; close ``fig``.

    Each file goes to a temporary name in the same folder first and is then ``os.replace``-d,
    so a killed run never leaves half an image. The PDF carries no creation date, so
    redrawing the same data gives the same bytes where matplotlib allows it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        for fmt, metadata in (("png", None), ("pdf", {"CreationDate": None})):
            path = folder / f"{name}.{fmt}"
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=f".{fmt}.tmp", dir=folder)
            os.close(fd)
            try:
                fig.savefig(tmp, format=fmt, dpi=DPI, bbox_inches="tight", metadata=metadata)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            written.append(path)
    finally:
        plt.close(fig)
    return written
