"""Experiment: a model that learns from the composition itself (Roost-style attention over the elements).

Issue 17 asks for at least one arch that learns from the weighted set of elements rather than the fixed 243
composition statistics. This script trains one on the ``bench`` split's training rows (Bravais lattice, 14
classes) and reports its validation top-1 / top-2 per epoch (compare with the validation table of
docs/evaluation.md: LightGBM on the statistics 64.9 / 78.7, RandomForest 63.7 / 78.3); the test sets are not
touched. The network is the library's (:class:`cryspnet_gen.nn.ElementAttention`, what ``--arch attention``
trains) on the element encoding alone (:func:`cryspnet_gen.formula.element_encoding`), with its own plain
schedule (no bootstrap or oversampling); see docs/evaluation.md for the verdict.

Model: each element is a learned embedding (trained here, not downloaded); three rounds of fraction-weighted
self-attention between the elements of a formula (Roost's message passing, simplified), then fraction-weighted
attention pooling and an MLP head.

Usage::

    python bench/composition_attention.py [--epochs 25] [--dim 96] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from cryspnet_gen.formula import element_encoding
from cryspnet_gen.nn import ElementAttention
from cryspnet_gen.symmetry import BRAVAIS_LATTICES


def topk(p: np.ndarray, y: np.ndarray, k: int) -> float:
    return float((np.argsort(-p, axis=1)[:, :k] == y[:, None]).any(axis=1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--dim", type=int, default=96)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--save", help="write the validation rows and probabilities (best epoch) to this .npz"
    )
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    from cryspnet_gen.train import frame_and_features

    frame, X = frame_and_features("bench", progress=False)
    good = np.isfinite(X).all(axis=1)
    split = frame["split"].to_numpy()
    tr, va = np.flatnonzero((split == "train") & good), np.flatnonzero((split == "val") & good)
    index = {b: i for i, b in enumerate(BRAVAIS_LATTICES)}
    y = np.array([index[b] for b in frame["bravais"]])
    t0 = time.perf_counter()
    enc = torch.from_numpy(element_encoding(list(frame["formula"])))  # no statistics before it: n_features=0
    print(f"{len(tr)} train / {len(va)} val rows; encoded in {time.perf_counter() - t0:.0f} s", flush=True)

    model = ElementAttention(n_features=0, n_classes=len(BRAVAIS_LATTICES), dim=args.dim)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=2e-3, total_steps=args.epochs * (len(tr) // 512 + 1)
    )
    yt = torch.from_numpy(y)
    rng = np.random.default_rng(args.seed)
    best = (np.inf, None, 0)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(tr)
        for s in range(0, len(order), 512):
            b = order[s : s + 512]
            loss = nn.functional.cross_entropy(model(enc[b]), yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(enc[va[s : s + 2048]]) for s in range(0, len(va), 2048)])
        val_loss = float(nn.functional.cross_entropy(logits, yt[va]))
        p = torch.softmax(logits, -1).numpy()
        print(
            f"epoch {epoch + 1}: val loss {val_loss:.4f} top-1 {topk(p, y[va], 1):.4f} top-2 {topk(p, y[va], 2):.4f} "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
        if val_loss < best[0]:
            best = (val_loss, p, epoch + 1)
    _, p_att, epoch = best
    if args.save:
        np.savez(args.save, rows=va, p=p_att)
    print(
        f"element attention (best val loss, epoch {epoch}): top-1 {topk(p_att, y[va], 1):.4f} "
        f"top-2 {topk(p_att, y[va], 2):.4f}; {time.perf_counter() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
