"""One look for every figure of the suite, ready for a paper: sizes, fonts, colours, saving.

* Sizes: ``ONE_COLUMN`` (3.3 in) and ``TWO_COLUMN`` (6.9 in) wide, as journals print them;
  text 7-8 pt at that size (``new_figure`` makes a figure at print size: never scale it).
* Fonts: TrueType embedded in the PDF (``pdf.fonttype`` 42; several submission systems reject
  Type 3), math labels through matplotlib's mathtext (``GRAD_LABEL``).
* No title inside a figure: its caption lives in the report and the README.
* V1 and V2 keep one colour and one line style everywhere (Okabe-Ito colours, distinct for
  colour-blind readers; V1 solid, V2 dashed, so the figures also read in greyscale); the
  five unit kinds of He et al. Table 2 reuse them (``original`` is V1's, ``full_preact`` V2's).
* Figures are drawn with the non-interactive Agg backend (works headless) and saved as PNG and
  PDF atomically, with no creation date (same data, same bytes where matplotlib allows it).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

ONE_COLUMN, TWO_COLUMN = 3.3, 6.9      # inches
V1_COLOR = "#D55E00"  # vermillion
V2_COLOR = "#0072B2"  # blue
VERSION_COLORS = {"V1": V1_COLOR, "V2": V2_COLOR}
VERSION_DASHES = {"V1": "-", "V2": "--"}
VERSION_MARKERS = {"V1": "o", "V2": "s"}
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
GRAD_LABEL = r"$\Vert\partial L/\partial x_l\Vert$"
STAGE_LINE = dict(color="0.55", linestyle=":", linewidth=0.7, zorder=0)
DPI = 300
RC = {
    "pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none",
    "font.size": 7.5, "axes.titlesize": 7.5, "axes.labelsize": 7.5, "xtick.labelsize": 7,
    "ytick.labelsize": 7, "legend.fontsize": 7, "legend.title_fontsize": 7,
    "axes.linewidth": 0.6, "lines.linewidth": 1.1, "lines.markersize": 3.5,
    "xtick.major.width": 0.6, "ytick.major.width": 0.6, "grid.linewidth": 0.4,
    "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
    "savefig.dpi": DPI, "savefig.bbox": "tight", "savefig.pad_inches": 0.02, "figure.dpi": 100,
    "mathtext.fontset": "dejavusans",
}


def set_style() -> None:
    """The suite's theme; call once before drawing."""
    sns.set_theme(context="paper", style="whitegrid",
                  palette=[V1_COLOR, V2_COLOR, *list(UNIT_COLORS.values())[1:4]], rc=RC)


def new_figure(width: str = "one", height: float = 2.4, nrows: int = 1, ncols: int = 1, **kw):
    """(fig, axes) at print size: ``width`` "one" (3.3 in) or "two" (6.9 in) columns."""
    inches = {"one": ONE_COLUMN, "two": TWO_COLUMN}[width]
    return plt.subplots(nrows, ncols, figsize=(inches, height), squeeze=False,
                        constrained_layout=True, **kw)


def legend_above(fig, ax, ncol: int | None = None) -> None:
    """The legend of ``ax`` once, above all panels of ``fig`` (a label drawn several times
    appears once): inside a panel a legend covers some depth's or some run's curves."""
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    if unique:
        fig.legend(unique.values(), unique.keys(), loc="outside upper center", ncol=ncol or len(unique))


def unit_palette() -> dict:
    """Seaborn ``palette=`` for ``hue="unit_kind"`` (the five kinds of He et al. Table 2)."""
    return dict(UNIT_COLORS)


def version_line(version: str) -> dict:
    """Colour, line style and label of a version, for ``ax.plot(..., **version_line("V1"))``."""
    return dict(color=VERSION_COLORS[version], linestyle=VERSION_DASHES[version],
                label=VERSION_LABELS[version])


def mark_stage_boundaries(ax, boundaries, *, offset=-0.5, label=None) -> None:
    """Dotted vertical lines where a new stage (a dimension change) begins: half a unit before
    each unit index in ``boundaries``; only the first carries ``label``."""
    for i, b in enumerate(sorted(boundaries)):
        ax.axvline(b + offset, label=label if i == 0 else None, **STAGE_LINE)


def save_figure(fig, folder, name) -> list[Path]:
    """Write ``folder/name.png`` and ``folder/name.pdf`` atomically; close ``fig``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        for fmt, metadata in (("png", None), ("pdf", {"CreationDate": None})):
            path = folder / f"{name}.{fmt}"
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=f".{fmt}.tmp", dir=folder)
            os.close(fd)
            try:
                with plt.rc_context(RC):
                    fig.savefig(tmp, format=fmt, dpi=DPI, metadata=metadata)
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            written.append(path)
    finally:
        plt.close(fig)
    return written
