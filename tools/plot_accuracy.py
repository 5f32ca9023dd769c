#!/usr/bin/env python3
"""plot_accuracy.py: draws docs/accuracy.png from the two result tables of docs/ACCURACY.md
("Results (test splits)": one table per task family, a row per configuration, a column per
budget "Nb (TOKENS)", cells = problems right out of 100, "refused" or empty). One panel per
family: accuracy against KV tokens per request, a line per configuration with 95% Wilson
intervals (as tools/wilson.h), full KV as a dashed line. Needs matplotlib (not a build or test
dependency: run it by hand after editing the tables).

usage: python3 tools/plot_accuracy.py [docs/ACCURACY.md] [docs/accuracy.png]
"""
import math
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

Z95 = 1.959963984540054


def wilson(k, n):
    p, d = k / n, 1 + Z95 * Z95 / n
    c = (p + Z95 * Z95 / (2 * n)) / d
    h = Z95 * math.sqrt(p * (1 - p) / n + Z95 * Z95 / (4 * n * n)) / d
    return c - h, c + h


def tables(md):
    """[(title, full_kv, budgets [tokens], {configuration: [count or None]})]"""
    out = []
    lines = open(md).read().split("\n")
    for i, l in enumerate(lines):
        m = re.match(r"^(Family \d) \(full KV (\d+)/100", l)
        if not m:
            continue
        j = i + 1
        while not lines[j].startswith("| configuration"):
            j += 1
        budgets = [int(x.replace(",", "")) for x in re.findall(r"\(([\d,]+)\)", lines[j])]
        rows = {}
        for r in lines[j + 2:]:
            if not r.startswith("|"):
                break
            cells = [c.strip().strip("*") for c in r.strip("|").split("|")]
            rows[cells[0]] = [int(c) if c.isdigit() else None for c in cells[1:]]
        out.append((m.group(1), int(m.group(2)), budgets, rows))
    return out


def main(argv):
    md = argv[0] if argv else "docs/ACCURACY.md"
    png = argv[1] if len(argv) > 1 else "docs/accuracy.png"
    ts = tables(md)
    if len(ts) != 2:
        print(f"{md}: expected 2 family tables, found {len(ts)}", file=sys.stderr)
        return 1
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, (title, full, budgets, rows) in zip(axes, ts):
        for name, counts in rows.items():
            pts = [(b, c) for b, c in zip(budgets, counts) if c is not None]
            if not pts:
                continue
            xs = [b for b, _ in pts]
            ys = [c for _, c in pts]
            lo = [max(0.0, c - 100 * wilson(c, 100)[0]) for c in ys]
            hi = [max(0.0, 100 * wilson(c, 100)[1] - c) for c in ys]
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=name,
                        linestyle="-" if len(xs) > 1 else "none")
        ax.axhline(full, color="black", linestyle="--", linewidth=1, label=f"full KV ({full})")
        ax.set_title(f"{title}, 100 test problems")
        ax.set_xlabel("KV tokens per request (budget)")
        ax.set_ylabel("accuracy, % (95% Wilson interval)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
