#!/usr/bin/env python3
"""plot_decode.py: draws a decode-throughput curve from one GPU call's JSON lines: `zipage bench
decode --json Z` and `python3 tools/peer_decode.py --json P` run on the same machine, over the
same batch x context points. Left panel: output tok/s against the batch at each context, for
zipage, the PyTorch CUDA-graph peer and the memory roofline (weights + KV read per step at the
copy bandwidth zipage measured in the call). Right panel: zipage's fraction of that roofline
and zipage / peer. Needs matplotlib (not a build or test dependency: run it by hand on the JSON
a device call brought back).

usage: python3 tools/plot_decode.py ZIPAGE.jsonl PEER.jsonl OUT.png [TITLE]
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def points(path):
    """(batch, context) -> record, the decode points of a JSON-lines file (prefill lines skipped)."""
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            if "batch" in r and "context" in r:
                out[(r["batch"], r["context"])] = r
    return out


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__.strip().splitlines()[-1])
    zp, peer = points(sys.argv[1]), points(sys.argv[2])
    if not zp:
        sys.exit(f"{sys.argv[1]}: no decode points (batch, context)")
    contexts = sorted({c for _, c in zp})
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, L in enumerate(contexts):
        color = f"C{i}"
        bs = sorted(b for b, c in zp if c == L)
        ax.plot(bs, [zp[(b, L)]["tok_s"] for b in bs], "o-", color=color, label=f"zipage, L={L}")
        ax.plot(bs, [zp[(b, L)]["roofline_tok_s"] for b in bs], "x:", color=color,
                label=f"roofline, L={L}")
        pb = [b for b in bs if (b, L) in peer]
        if pb:
            ax.plot(pb, [peer[(b, L)]["tok_s"] for b in pb], "s--", color=color, alpha=0.6,
                    label=f"PyTorch peer, L={L}")
            ax2.plot(pb, [zp[(b, L)]["tok_s"] / peer[(b, L)]["tok_s"] for b in pb], "s--",
                     color=color, label=f"zipage / peer, L={L}")
        ax2.plot(bs, [zp[(b, L)]["tok_s"] / zp[(b, L)]["roofline_tok_s"] for b in bs], "o-",
                 color=color, label=f"of roofline, L={L}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch (sequences decoding)")
    ax.set_ylabel("output tok/s")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax2.set_xscale("log", base=2)
    ax2.axhline(0.85, color="gray", lw=0.8, ls=":")
    ax2.axhline(1.2, color="gray", lw=0.8, ls=":")
    ax2.set_xlabel("batch (sequences decoding)")
    ax2.set_ylabel("ratio")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=7)
    if len(sys.argv) == 5:
        fig.suptitle(sys.argv[4], fontsize=10)
    fig.tight_layout()
    fig.savefig(sys.argv[3], dpi=110)


if __name__ == "__main__":
    main()
