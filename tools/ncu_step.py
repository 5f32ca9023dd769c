#!/usr/bin/env python3
"""ncu_step.py: where one decode step's GPU time goes, from Nsight Compute's CSV of a `zipage
bench decode --steps 1` run (every kernel's gpu__time_duration.sum, `ncu --csv --print-units
base`). The kernels of the last step are those from the last zp_embed launch on (each step
starts with the embedding); they are summed by kernel name (cuBLASLt's GEMMs under their own
names), largest first, with the step's total and the first kernels in launch order so one
layer's sequence can be read off. Run by tools/gpu-check.sh --profile; by hand:

usage: python3 tools/ncu_step.py NCU.csv [N_FIRST]
"""
import collections
import csv
import sys


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__.strip().splitlines()[-1])
    with open(sys.argv[1]) as f:
        rows = list(csv.reader(line for line in f if line.startswith('"')))
    if not rows:
        sys.exit(f"{sys.argv[1]}: no CSV rows (did ncu profile any kernel?)")
    head, rows = rows[0], rows[1:]
    name_i, value_i = head.index("Kernel Name"), head.index("Metric Value")
    ks = [(r[name_i], float(r[value_i].replace(",", ""))) for r in rows]
    starts = [i for i, (n, _) in enumerate(ks) if n.startswith("zp_embed")]
    if not starts:
        sys.exit(f"{sys.argv[1]}: no zp_embed kernel, so no step to cut out")
    step = ks[starts[-1]:]
    total = sum(t for _, t in step)
    print(f"last step: {len(step)} kernels, {total / 1e6:.3f} ms of kernel time")
    groups = collections.defaultdict(lambda: [0, 0.0])
    for n, t in step:
        g = groups[n.split("(")[0][:80]]
        g[0] += 1
        g[1] += t
    for n, (c, t) in sorted(groups.items(), key=lambda x: -x[1][1]):
        print(f"{t / 1e6:8.3f} ms {100 * t / total:5.1f}% {c:5d} x {t / c / 1e3:8.2f} us  {n}")
    first = int(sys.argv[2]) if len(sys.argv) == 3 else 24
    print(f"the step's first {first} kernels:")
    for n, t in step[:first]:
        print(f"  {t / 1e3:8.2f} us  {n[:100]}")


if __name__ == "__main__":
    main()
