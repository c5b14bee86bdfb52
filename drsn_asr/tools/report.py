"""Tables and plots of evaluation results (matplotlib is imported only when a plot is asked for)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def snr_table(results: dict[str, dict[str, Any]], top1: bool = False) -> str:
    """A Markdown table: one row per model, keyword accuracy clean and at each SNR, plus unknown rejection
    (clean); with `top1`, both threshold-free (`top1_keyword_accuracy`, `top1_unknown_rejection`)."""
    keyword, rejection = ("top1_keyword_accuracy", "top1_unknown_rejection") if top1 else (
        "keyword_accuracy", "unknown_rejection")
    snrs = sorted({s for r in results.values() for s in r.get("by_snr", {})}, key=lambda s: -float(s))
    head = "| model | clean | " + " | ".join(f"{s} dB" for s in snrs) + " | unknown rejection (clean) |"
    rule = "|---" * (len(snrs) + 3) + "|"
    rows = []
    for name, r in results.items():
        cells = [_pct(r[keyword])] + [_pct(r["by_snr"][s][keyword]) for s in snrs]
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {_pct(r[rejection])} |")
    return "\n".join([head, rule, *rows])


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def result_table(result: dict[str, Any]) -> str:
    """Plain-text summary of one evaluation: overall numbers (keyword accuracy also threshold-free, as top-1),
    then per-class recall."""

    def line(r: dict[str, Any]) -> str:
        return (f"accuracy {_pct(r['accuracy'])}   keyword accuracy {_pct(r['keyword_accuracy'])} "
                f"(top-1 {_pct(r['top1_keyword_accuracy'])})   unknown rejection {_pct(r['unknown_rejection'])}")

    lines = [f"clips {result['n_clips']}   " + line(result)]
    lines += [f"  SNR {snr:>5} dB: " + line(r) for snr, r in result.get("by_snr", {}).items()]
    lines.append("per-class recall (clean): " + "  ".join(f"{k} {_pct(v)}" for k, v in result["per_class"].items()))
    return "\n".join(lines)


def plot_results(results: dict[str, dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """accuracy_vs_snr.png (one line per model) and confusion_<model>.png; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..runtime.fileio import atomic_write

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        snrs = sorted(r.get("by_snr", {}), key=float)
        xs = [float(s) for s in snrs] + [30.0]
        ys = [100 * (r["by_snr"][s]["keyword_accuracy"] or 0) for s in snrs] + [100 * (r["keyword_accuracy"] or 0)]
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_xlabel("SNR (dB); 30 = clean")
    ax.set_ylabel("keyword accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_write(out_dir / "accuracy_vs_snr.png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    written.append(out_dir / "accuracy_vs_snr.png")
    plt.close(fig)
    for name, r in results.items():
        labels = sorted(set(r["confusion"]) | {p for row in r["confusion"].values() for p in row})
        matrix = [[r["confusion"].get(t, {}).get(p, 0) for p in labels] for t in labels]
        fig, ax = plt.subplots(figsize=(8, 7))
        ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("expected")
        ax.set_title(f"confusion (clean): {name}")
        fig.tight_layout()
        path = out_dir / f"confusion_{Path(name).stem}.png"
        with atomic_write(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        written.append(path)
        plt.close(fig)
    return written
