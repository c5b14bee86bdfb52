"""Pictures of an `Explanation`: a PNG (matplotlib, Agg) or a self-contained HTML page (the PNG plus the numbers).

Rows, all on one time axis (seconds from the start of the recording):
    log-mel of the span, the Recognizer's detections shaded and labelled;
    posteriors per window of the most likely labels, and the detector threshold;
    per shrinkage unit: τ per channel as a heat map (each channel relative to its median over the span, since
        channels' τ differ by an order of magnitude), then mean τ and the zeroed fraction as lines;
    with `compare`: the second model's posteriors (and its detections).
Window quantities (scores, τ, zeroed fraction) are drawn at each window's end time. matplotlib is imported
only when a picture is drawn.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime.config import LABEL_SILENCE, LABEL_UNKNOWN
from .explain import Explanation
from ..runtime.fileio import atomic_write

MAX_SCORE_LINES = 6  # labels drawn in a scores row: those that come closest to winning
MIN_SCORE_SHOWN = 0.1  # ... among those whose posterior reaches this somewhere
FIGURE_WIDTH_IN = 12.0
ROW_HEIGHT_IN = 1.15
DPI = 100
SUFFIXES = (".png", ".html")


def _shown_labels(expls: list[Explanation]) -> list[str]:
    """Labels worth a line: by peak posterior over all models, keywords before _unknown_/_silence_ on ties."""
    peak: dict[str, float] = {}
    for e in expls:
        for j, label in enumerate(e.labels):
            peak[label] = max(peak.get(label, 0.0), float(e.scores[:, j].max()))
    ranked = sorted(peak, key=lambda label: (-peak[label], label in (LABEL_UNKNOWN, LABEL_SILENCE)))
    return [label for label in ranked if peak[label] >= MIN_SCORE_SHOWN][:MAX_SCORE_LINES] or ranked[:1]


def _colors(labels: list[str]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    colors = {}
    for i, label in enumerate(labels):
        colors[label] = "0.45" if label == LABEL_SILENCE else "0.7" if label == LABEL_UNKNOWN else cmap(i % 10)
    return colors


def _mark_detections(ax: Any, expl: Explanation, text_y: float | None = None) -> None:
    for d in expl.detections:
        ax.axvspan(d.start_s, d.end_s, color="white" if text_y is not None else "C2", alpha=0.25, lw=0)
        if text_y is not None:
            ax.text((d.start_s + d.end_s) / 2, text_y, f"{d.label} {d.score:.2f}", ha="center", va="top",
                    color="white", fontsize=9, fontweight="bold")


def _relative_to_median(tau: np.ndarray) -> tuple[np.ndarray, Any]:
    """τ ÷ each channel's median over time, and a log colour scale symmetric around 1.

    Channels' τ differ by an order of magnitude, so raw τ would show which channels are large, not when τ rises.
    """
    from matplotlib.colors import LogNorm

    median = np.median(tau, axis=0, keepdims=True)
    relative = np.maximum(tau, 1e-12) / np.maximum(median, 1e-12)
    octaves = float(np.clip(np.ceil(2 * np.quantile(np.abs(np.log2(relative)), 0.99)) / 2, 0.5, 2.0))  # in 1/2 octaves
    return relative, LogNorm(2.0**-octaves, 2.0**octaves, clip=True)


def _mark_padding(ax: Any, expl: Explanation, label: bool = True) -> None:
    """Grey out the windows that reach before the recording's start (the Recognizer pads them with silence)."""
    if expl.times_s[0] < expl.window_s:
        ax.axvspan(expl.times_s[0] - expl.hop_ms / 2000, min(expl.window_s, expl.times_s[-1]), color="0.5", alpha=0.12,
                   lw=0, label="window starts before 0 s" if label else None)


def _scores_row(ax: Any, expl: Explanation, shown: list[str], colors: dict[str, Any], title: str) -> None:
    _mark_detections(ax, expl)
    for label in shown:
        if label in expl.labels:
            special = label in (LABEL_UNKNOWN, LABEL_SILENCE)  # matplotlib's legend skips names starting with _
            ax.plot(expl.times_s, expl.scores[:, expl.labels.index(label)], "--" if special else "-", color=colors[label],
                    lw=1.4, label=label.strip("_") if special else label)
    ax.axhline(expl.threshold, color="k", lw=0.8, ls=":", label=f"detector threshold {expl.threshold:g}")
    _mark_padding(ax, expl)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("posterior")
    ax.set_title(title, fontsize=10, loc="left")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)


def plot_explanation(expl: Explanation, compare: Explanation | None = None, title: str | None = None) -> Any:
    """A matplotlib Figure of `expl` (and `compare`, the same recording through a second model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_units = len(expl.unit_names)
    heights = [2.0, 1.5]
    for tau in expl.tau:
        heights += [1.3 if tau.shape[1] > 1 else 0.45, 1.0]
    if compare is not None:
        heights.append(1.5)
    fig = plt.figure(figsize=(FIGURE_WIDTH_IN, ROW_HEIGHT_IN * sum(heights) + 1.0), dpi=DPI)
    grid = fig.add_gridspec(len(heights), 2, height_ratios=heights, width_ratios=[1.0, 0.012], hspace=0.55, wspace=0.02)
    axes = [fig.add_subplot(grid[0, 0])]
    axes += [fig.add_subplot(grid[i, 0], sharex=axes[0]) for i in range(1, len(heights))]
    hop_s = expl.hop_ms / 1000
    t_lo, t_hi = expl.times_s[0] - hop_s / 2, expl.times_s[-1] + hop_s / 2

    ax = axes[0]
    frame_s = expl.frame_times_s[1] - expl.frame_times_s[0] if len(expl.frame_times_s) > 1 else 0.01
    if expl.logmel.shape[1]:
        extent = (expl.frame_times_s[0] - frame_s / 2, expl.frame_times_s[-1] + frame_s / 2, 0, expl.logmel.shape[0])
        image = ax.imshow(expl.logmel, origin="lower", aspect="auto", extent=extent, cmap="magma", interpolation="nearest")
        fig.colorbar(image, cax=fig.add_subplot(grid[0, 1])).set_label(
            "log power" if expl.frontend == "logmel" else "value", fontsize=8)
    _mark_detections(ax, expl, text_y=expl.logmel.shape[0] - 1)
    if expl.frontend == "logmel":
        ax.set_ylabel("mel band")
        ax.set_title(f"log-mel spectrogram; shaded: detections of {expl.model} (label, score)", fontsize=10, loc="left")
    else:
        ax.set_ylabel("embedding value")
        ax.set_title(f"speech-embedding frames (one per 80 ms, each of 782 ms); shaded: detections of {expl.model} "
                     "(label, score)", fontsize=10, loc="left")

    shown = _shown_labels([expl] + ([compare] if compare is not None else []))
    colors = _colors(shown)
    _scores_row(axes[1], expl, shown, colors,
                f"{expl.model} ({expl.block}): posterior of each {expl.window_s:g} s window, at its end time")

    for u in range(n_units):
        name, tau = expl.unit_names[u], expl.tau[u]
        ax = axes[2 + 2 * u]
        kind = "the τ shared by all channels (CS)" if tau.shape[1] == 1 else f"τ of each of {tau.shape[1]} channels (CW)"
        relative, norm = _relative_to_median(tau)
        image = ax.imshow(relative.T, origin="lower", aspect="auto", cmap="RdBu_r", norm=norm, interpolation="nearest",
                          extent=(t_lo, t_hi, -0.5, tau.shape[1] - 0.5))
        bar = fig.colorbar(image, cax=fig.add_subplot(grid[2 + 2 * u, 1]))
        bar.set_label("× median", fontsize=8)
        bar.minorticks_off()
        ticks = [norm.vmin, *(2.0**k for k in range(-int(np.log2(norm.vmax)), int(np.log2(norm.vmax)) + 1)), norm.vmax]
        ticks = sorted(set(round(t, 2) for t in ticks)) if tau.shape[1] > 1 else [norm.vmin, 1, norm.vmax]
        bar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks], fontsize=7)
        if tau.shape[1] > 1:
            ax.set_ylabel("channel")
        else:
            ax.set_yticks([])
        ax.set_title(f"shrinkage unit {u + 1} ({name}): {kind}, relative to its median over the span "
                     "(red: thresholds more)", fontsize=10, loc="left")
        ax = axes[3 + 2 * u]
        _mark_padding(ax, expl, label=False)
        lines = ax.plot(expl.times_s, expl.tau_mean[u], color="C0", lw=1.4, label="mean τ (left)")
        ax.set_ylabel("mean τ", color="C0")
        ax.set_ylim(bottom=0)
        right = ax.twinx()
        lines += right.plot(expl.times_s, 100 * expl.zero_fraction[u], color="C3", lw=1.4,
                            label="zeroed % (right)")
        right.set_ylim(0, max(5.0, 100 * float(expl.zero_fraction[u].max()) * 1.15))
        right.set_ylabel("zeroed (%)", color="C3")
        ax.legend(lines, [line.get_label() for line in lines], loc="upper left", bbox_to_anchor=(1.05, 1.0),
                  fontsize=8, frameon=False)
    if compare is not None:
        _scores_row(axes[-1], compare, shown, colors, f"compare: {compare.model} ({compare.block}) on the same audio; "
                    "shaded: its detections")
    if n_units == 0:
        axes[1].text(0.99, 0.95, f"{expl.block}: no shrinkage units", transform=axes[1].transAxes, ha="right",
                     va="top", fontsize=9, color="0.3")
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    axes[-1].set_xlabel("time (s); window rows are drawn at each window's end")
    axes[0].set_xlim(min(t_lo, expl.start_s), max(t_hi, expl.end_s))
    fig.suptitle(title or f"drsn-asr explain: {expl.start_s:.2f}–{expl.end_s:.2f} s, one window every {expl.hop_ms:g} ms",
                 x=0.01, ha="left", fontsize=12)
    fig.subplots_adjust(left=0.06, right=0.83, top=1 - 0.75 / fig.get_figheight(), bottom=0.5 / fig.get_figheight())
    return fig


def _png_bytes(expl: Explanation, compare: Explanation | None, title: str | None) -> bytes:
    import matplotlib.pyplot as plt

    fig = plot_explanation(expl, compare, title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    return buffer.getvalue()


def _table(head: list[str], rows: list[list[str]]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>\n" for row in rows)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>\n{body}</tbody></table>"


def _html(expl: Explanation, compare: Explanation | None, png: bytes, title: str) -> str:
    detections = []
    for e in [expl] + ([compare] if compare is not None else []):
        detections += [[e.model, f"{d.start_s:.3f}", f"{d.end_s:.3f}", d.label, f"{d.score:.3f}"] for d in e.detections]
    head = ["window end (s)", "top label", "posterior"]
    if compare is not None:
        head += [f"{compare.model}: top", "posterior"]
    for u, name in enumerate(expl.unit_names):
        head += [f"unit {u + 1} ({name}) mean τ", "zeroed (%)"]
    rows = []
    for i, row in enumerate(expl.unit_rows()):
        cells = [f"{row['end_s']:.3f}", row["top"], f"{row['score']:.3f}"]
        if compare is not None:
            j = int(compare.scores[i].argmax()) if i < len(compare.scores) else None
            cells += [compare.labels[j], f"{compare.scores[i, j]:.3f}"] if j is not None else ["", ""]
        for name in expl.unit_names:
            cells += [f"{row[f'{name} mean τ']:.4f}", f"{100 * row[f'{name} zeroed']:.1f}"]
        rows.append(cells)
    image = base64.b64encode(png).decode("ascii")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1.5em;max-width:1300px}} img{{max-width:100%}}
table{{border-collapse:collapse;font-size:0.85em}} td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}
th{{background:#f3f3f3}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Model <b>{html.escape(expl.model)}</b> ({html.escape(expl.block)}); span {expl.start_s:.3f}–{expl.end_s:.3f} s;
one {expl.window_s:g} s window every {expl.hop_ms:g} ms. τ is computed from a whole window, so each value belongs
to the window ending at its time. Posteriors are per window, before the recognizer's smoothing.</p>
<img alt="log-mel, posteriors and shrinkage thresholds over time" src="data:image/png;base64,{image}">
<h2>Detections</h2>
{_table(["model", "start (s)", "end (s)", "label", "score"], detections) if detections else "<p>none</p>"}
<h2>Per window</h2>
{_table(head, rows)}
</body></html>
"""


def save_report(expl: Explanation, path: str | os.PathLike, compare: Explanation | None = None,
                title: str | None = None) -> Path:
    """Write `path`: a .png picture, or a .html page holding the picture and the per-window numbers."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: cannot write {suffix or 'a file without suffix'}; use {' or '.join(SUFFIXES)}")
    if compare is not None and not np.allclose(compare.times_s, expl.times_s):
        raise ValueError("compare was explained over other windows; use the same span and hop_ms for both")
    png = _png_bytes(expl, compare, title)
    with atomic_write(path) as tmp:
        if suffix == ".png":
            tmp.write_bytes(png)
        else:
            tmp.write_text(_html(expl, compare, png, title or f"drsn-asr explain ({expl.model})"), encoding="utf-8")
    return path
