"""The compare report's robustness part: a methods x attacks heat map of the recovered share (attacks.png) and a
table with the raw figures (attacks.md), written into the compare report directory."""

from __future__ import annotations

import statistics
from pathlib import Path


def share_matrix(rows: dict[str, list[dict]]) -> tuple[list[str], list[str], list[list[float | None]]]:
    """(labels, attacks, mean recovered share over seeds) from {label: [attacks.json bodies]}."""
    labels = list(rows)
    attacks = list(dict.fromkeys(a for bodies in rows.values() for body in bodies for a in body["attacks"]))
    matrix = []
    for label in labels:
        line = []
        for attack in attacks:
            values = [b["attacks"][attack]["recovered_share"] for b in rows[label]
                      if attack in b["attacks"] and b["attacks"][attack]["recovered_share"] is not None]
            line.append(statistics.mean(values) if values else None)
        matrix.append(line)
    return labels, attacks, matrix


def heat_map(rows: dict[str, list[dict]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels, attacks, matrix = share_matrix(rows)
    values = np.array([[np.nan if v is None else v for v in line] for line in matrix], dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(attacks), 0.8 + 0.45 * len(labels)))
    image = ax.imshow(values, vmin=0, vmax=1, cmap="magma_r", aspect="auto")
    ax.set_xticks(range(len(attacks)), attacks, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i, line in enumerate(matrix):
        for j, v in enumerate(line):
            ax.text(j, i, "–" if v is None else f"{v:.2f}", ha="center", va="center",
                    color="white" if v is not None and v > 0.6 else "black", fontsize=8)
    fig.colorbar(image, ax=ax, label="recovered share")
    ax.set_title("Recovered share of the held-out forget facts (0 = oracle, 1 = vanilla)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def table_markdown(rows: dict[str, list[dict]]) -> str:
    """Per label and attack: the headline variant, its metric for model / oracle / vanilla (first seed's figures,
    mean share over seeds) and the recovered share."""
    labels, attacks, matrix = share_matrix(rows)
    lines = ["**Robustness to attacks** (docs/robustness.md): recovered share = (attacked - oracle attacked) / "
             "(vanilla attacked - oracle attacked), clipped to [0, 1], on the held-out forget facts.", "",
             "![recovered share](attacks.png)", "",
             "| model | attack | variant | metric | attacked | oracle attacked | vanilla attacked | recovered share |",
             "|---|---|---|---|---|---|---|---|"]
    for label, shares in zip(labels, matrix):
        body = rows[label][0]
        for attack, share in zip(attacks, shares):
            a = body["attacks"].get(attack)
            if a is None or a["headline"] is None:
                lines.append(f"| {label} | {attack} | – | – | – | – | – | – |")
                continue
            v = a["variants"][a["headline"]]
            m = a["metric"]
            lines.append(f"| {label} | {attack} | {a['headline']} | {m} | {_fmt(v['model'].get(m))} | "
                         f"{_fmt(v['oracle'].get(m))} | {_fmt(v['vanilla'].get(m))} | {_fmt(share)} |")
    notes = list(dict.fromkeys(n for bodies in rows.values() for b in bodies
                               for n in b["notes"] + [x for a in b["attacks"].values() for x in a["notes"]]))
    if notes:
        lines += ["", "Notes:", *[f"- {n}" for n in notes]]
    return "\n".join(lines)


def write_attack_report(rows: dict[str, list[dict]], report_dir: Path) -> tuple[Path, Path]:
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    png = heat_map(rows, report_dir / "attacks.png")
    md = report_dir / "attacks.md"
    md.write_text(table_markdown(rows) + "\n")
    return png, md
