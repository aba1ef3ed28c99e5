"""Fuzz ``generate_candidates`` with random formulas, valid and not: every call must return candidates or raise
one of the documented errors (``ValueError`` for a formula or option it cannot take, ``GenerationError`` when no
source gives a structure); anything else is *uncaught*.

The formulas (fixed seed) mix random compositions of 1-5 elements (integer and decimal amounts, groups in
parentheses), known compounds, and broken input: unknown elements, bad case, empty and blank strings, unbalanced
parentheses, zero, negative and huge amounts, stray characters and Unicode, very long strings. Generation is kept
cheap: ``k=1``, one shared predictor, short timeouts (0.5 s a call, 0.25 s a space group) and, by default, the
template source with a small store of six cubic prototypes built here (rock salt, CsCl, fluorite, perovskite,
zinc blende, Cu3Au): every formula is parsed, featurized and predicted, and those of a matching anonymous formula
get substituted structures. Formulas no template fits fall back to CRYSPNet structures (pyxtal), within the timeout.

    python bench/fuzz_generate.py --n 10000 --seed 0
    python bench/fuzz_generate.py --n 500 --source cryspnet --timeout 10
"""

from __future__ import annotations

import argparse
import collections
import random
import signal
import string
import sys
import time
import traceback
import warnings

#: Element symbols up to Pu (filled by main: pymatgen is imported there).
ELEMENTS: list[str] = []
KNOWN = ["NaCl", "SrTiO3", "LiMnO2", "Li7La3Zr2O12", "Ca3(PO4)2", "La1.8Sr0.2CuO4", "GaAs", "MgAl2O4", "TiO2"]


def amount(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.45:
        return ""
    if r < 0.85:
        return str(rng.randint(1, 12))
    return f"{rng.uniform(0.05, 6):.{rng.randint(1, 3)}f}"


def valid_formula(rng: random.Random) -> str:
    els = rng.sample(ELEMENTS, rng.randint(1, 5))
    parts = [e + amount(rng) for e in els]
    if len(parts) >= 3 and rng.random() < 0.15:  # a group in parentheses
        i = rng.randrange(len(parts) - 1)
        parts[i : i + 2] = [f"({parts[i]}{parts[i + 1]}){rng.randint(2, 4)}"]
    return "".join(parts)


def broken_formula(rng: random.Random) -> str:
    base = valid_formula(rng)
    kind = rng.randrange(12)
    if kind == 0:
        return rng.choice(["Xx", "Qq", "Zz", "J", "Ab"]) + str(rng.randint(1, 3)) + "O"
    if kind == 1:
        return base.lower() if rng.random() < 0.5 else base.upper()
    if kind == 2:
        return rng.choice(["", " ", "\t", "\n", "()", "(", ")"])
    if kind == 3:
        return "(" + base if rng.random() < 0.5 else base + ")"
    if kind == 4:
        return base + rng.choice(["0", "-1", "-2.5", "0.0"])
    if kind == 5:
        return base + str(rng.choice([10**6, 10**9, 10**30]))
    if kind == 6:
        i = rng.randrange(len(base) + 1)
        return base[:i] + rng.choice("!@#$%^&*;,/\\|'\"`~ ") + base[i:]
    if kind == 7:
        return base + rng.choice(["·H2O", "Ω", "é", "\u200b", "\x00", "²"])
    if kind == 8:
        return "".join(rng.choice(string.printable) for _ in range(rng.randint(1, 30)))
    if kind == 9:
        return base * rng.randint(20, 60)
    if kind == 10:
        return rng.choice(ELEMENTS) + "1e5"
    return rng.choice(["nan", "inf", "NaN2", "None", "1", "12", "-", "+", "Na-Cl", "Na Cl"])


def formulas(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        r = rng.random()
        out.append(rng.choice(KNOWN) if r < 0.05 else valid_formula(rng) if r < 0.6 else broken_formula(rng))
    return out


PROTOTYPES = {  # name: (space group, cubic a in Å, species, fractional coordinates)
    "NaCl": ("Fm-3m", 5.64, ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    "CsCl": ("Pm-3m", 4.12, ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    "CaF2": ("Fm-3m", 5.46, ["Ca", "F"], [[0, 0, 0], [0.25, 0.25, 0.25]]),
    "SrTiO3": ("Pm-3m", 3.91, ["Sr", "Ti", "O"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]]),
    "ZnS": ("F-43m", 5.41, ["Zn", "S"], [[0, 0, 0], [0.25, 0.25, 0.25]]),
    "Cu3Au": ("Pm-3m", 3.75, ["Au", "Cu"], [[0, 0, 0], [0.5, 0.5, 0]]),
}


def prototype_store(folder: str) -> str:
    """A small template store of cubic prototypes (rock salt, CsCl, fluorite, perovskite, zinc blende, L1_2)."""
    from pathlib import Path

    from pymatgen.core import Lattice, Structure

    from cryspnet_gen.sources.templates.build import build_store, records_from_folder

    cifs = Path(folder) / "cifs"
    cifs.mkdir(parents=True, exist_ok=True)
    for name, (group, a, species, coords) in PROTOTYPES.items():
        Structure.from_spacegroup(group, Lattice.cubic(a), species, coords).to(
            filename=str(cifs / f"{name}.cif")
        )
    out = Path(folder) / "store"
    build_store(records_from_folder(cifs), out, description="fuzz prototypes", progress=False)
    return str(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="formulas")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument(
        "--source", default="templates", choices=["templates", "cryspnet", "both"], help="candidate source"
    )
    parser.add_argument("--timeout", type=float, default=0.5, help="seconds per generate_candidates call")
    parser.add_argument("--timeout-per-group", type=float, default=0.25, help="seconds per space group")
    parser.add_argument("--trace", action="store_true", help="print every formula and its time")
    args = parser.parse_args(argv)

    from pymatgen.core.periodic_table import Element

    from cryspnet_gen import generate_candidates, load_predictor
    from cryspnet_gen.records import GenerationError

    ELEMENTS[:] = [el.symbol for el in Element if el.Z <= 94]
    import tempfile

    templates = (
        prototype_store(tempfile.mkdtemp(prefix="fuzz-templates-")) if args.source != "cryspnet" else None
    )

    counts: collections.Counter[str] = collections.Counter()
    predictor = load_predictor()
    # A SIGALRM after a call has returned would end this process (the default action): count it instead.
    signal.signal(signal.SIGALRM, lambda signum, frame: counts.update(["stray alarm"]))
    uncaught: list[tuple[str, str]] = []
    messages: collections.Counter[str] = collections.Counter()
    slowest = (0.0, "")
    t0 = time.perf_counter()
    for i, formula in enumerate(formulas(args.n, args.seed)):
        t = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                cands = generate_candidates(
                    formula, k=1, predictor=predictor, source=args.source, templates=templates, seed=0,
                    timeout=args.timeout, timeout_per_group=args.timeout_per_group,
                )  # fmt: skip
            counts["candidates" if cands else "empty list"] += 1
            counts["with a warning"] += bool(caught)
            messages.update({f"{w.category.__name__}: {str(w.message)[:90]}" for w in caught})
        except ValueError:
            counts["ValueError (rejected)"] += 1
        except GenerationError:
            counts["GenerationError (no structure)"] += 1
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # anything else escaping the call, BaseExceptions included
            counts["uncaught"] += 1
            uncaught.append((formula, "".join(traceback.format_exception_only(exc)).strip()))
        if signal.getitimer(signal.ITIMER_REAL)[0] > 0:  # a timer left running would kill a later call
            counts["left an alarm armed"] += 1
            signal.setitimer(signal.ITIMER_REAL, 0)
        dt = time.perf_counter() - t
        slowest = max(slowest, (dt, formula))
        counts["slower than 10 s"] += dt > 10
        if args.trace:
            print(f"{i:6d} {dt:6.2f} s {formula!r}", flush=True)
        if (i + 1) % 1000 == 0:
            print(f"{i + 1:6d} formulas, {time.perf_counter() - t0:6.0f} s, {dict(counts)}", flush=True)
    seconds = time.perf_counter() - t0
    print(
        f"\n{args.n} formulas (seed {args.seed}, source {args.source or 'default'}, k=1) in {seconds:.0f} s"
    )
    for name in (
        "candidates",
        "empty list",
        "ValueError (rejected)",
        "GenerationError (no structure)",
        "uncaught",
    ):
        print(f"  {name:32s} {counts[name]:6d}")
    print(f"  {'with a warning':32s} {counts['with a warning']:6d}")
    print(f"  {'slower than 10 s':32s} {counts['slower than 10 s']:6d}")
    for name in ("left an alarm armed", "stray alarm"):
        print(f"  {name:32s} {counts[name]:6d}")
    for message, n in messages.most_common(5):
        print(f"  warning in {n} calls: {message}")
    print(f"  slowest call: {slowest[0]:.1f} s ({slowest[1]!r})")
    for formula, error in uncaught[:20]:
        print(f"  UNCAUGHT {formula!r}: {error}")
    return 1 if uncaught or counts["left an alarm armed"] or counts["stray alarm"] else 0


if __name__ == "__main__":
    sys.exit(main())
