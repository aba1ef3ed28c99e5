"""Experiment: a model that learns from the composition itself (Roost-style attention over the elements).

Issue 17 asks for at least one arch that learns from the weighted set of elements rather than the fixed 243
composition statistics. This script trains one on the ``bench`` split's training rows (Bravais lattice, 14
classes) and reports its validation top-1 / top-2 per epoch (compare with the validation table of
docs/evaluation.md: LightGBM on the statistics 64.9 / 78.7, RandomForest 63.7 / 78.3); the test sets are not
touched. It is not a shipped arch: see docs/evaluation.md for the verdict.

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

from cryspnet_gen.symmetry import BRAVAIS_LATTICES


def encode(formulas: list[str], max_elements: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Atomic numbers (0 = padding) and atomic fractions of each formula, padded to ``max_elements``."""
    from pymatgen.core import Composition

    z = np.zeros((len(formulas), max_elements), dtype=np.int64)
    w = np.zeros((len(formulas), max_elements), dtype=np.float32)
    for i, f in enumerate(formulas):
        comp = Composition(f).fractional_composition
        for j, (el, frac) in enumerate(sorted(comp.items(), key=lambda kv: -kv[1])[:max_elements]):
            z[i, j] = el.Z
            w[i, j] = frac
    return z, w


class ElementAttention(nn.Module):
    def __init__(self, dim: int = 96, rounds: int = 3, n_classes: int = 14) -> None:
        super().__init__()
        self.embed = nn.Embedding(120, dim, padding_idx=0)
        self.rounds = nn.ModuleList(
            nn.ModuleDict(
                {
                    "gate": nn.Sequential(nn.Linear(2 * dim, dim), nn.SiLU(), nn.Linear(dim, 1)),
                    "msg": nn.Sequential(nn.Linear(2 * dim, dim), nn.SiLU(), nn.Linear(dim, dim)),
                    "norm": nn.LayerNorm(dim),
                }
            )
            for _ in range(rounds)
        )
        self.pool_gate = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, 1))
        self.head = nn.Sequential(nn.Linear(dim, 256), nn.SiLU(), nn.Dropout(0.1), nn.Linear(256, n_classes))

    def forward(self, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        width = int((z > 0).sum(1).max())  # trim the padding to this batch's largest formula
        z, w = z[:, :width], w[:, :width]
        mask = z > 0
        h = self.embed(z) + torch.log(w.clamp_min(1e-6)).unsqueeze(-1) * 0.1
        logw = torch.where(mask, torch.log(w.clamp_min(1e-6)), torch.full_like(w, -1e9))
        n = z.shape[1]
        for layer in self.rounds:
            pair = torch.cat([h.unsqueeze(2).expand(-1, -1, n, -1), h.unsqueeze(1).expand(-1, n, -1, -1)], -1)
            score = layer["gate"](pair).squeeze(-1) + logw.unsqueeze(
                1
            )  # attention of i on j, weighted by w_j
            att = torch.softmax(score, dim=-1)
            h = layer["norm"](h + (att.unsqueeze(-1) * layer["msg"](pair)).sum(2))
        pool = torch.softmax(self.pool_gate(h).squeeze(-1) + logw, dim=-1)
        return self.head((pool.unsqueeze(-1) * h).sum(1))


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
    z, w = encode(list(frame["formula"]))
    print(f"{len(tr)} train / {len(va)} val rows; encoded in {time.perf_counter() - t0:.0f} s", flush=True)

    model = ElementAttention(dim=args.dim)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=2e-3, total_steps=args.epochs * (len(tr) // 512 + 1)
    )
    zt, wt, yt = torch.from_numpy(z), torch.from_numpy(w), torch.from_numpy(y)
    rng = np.random.default_rng(args.seed)
    best = (np.inf, None, 0)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(tr)
        for s in range(0, len(order), 512):
            b = order[s : s + 512]
            loss = nn.functional.cross_entropy(model(zt[b], wt[b]), yt[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            logits = torch.cat(
                [model(zt[va[s : s + 2048]], wt[va[s : s + 2048]]) for s in range(0, len(va), 2048)]
            )
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
