"""The one formula parser: formula text -> composition, formula unit, reduced and anonymous forms, subsets.

Every module of the package reads formulas through this one: :func:`parse_composition` (validated element
amounts, pymatgen's grammar plus hydrate/adduct notation), :func:`formula_unit` (the smallest integer formula unit
that a crystal structure of the formula holds), :func:`reduced_formula`, :func:`anonymous_formula`,
:func:`canonical_formula`, and the paper's Metal and Oxide subsets (:func:`is_metal`, :func:`is_oxide`,
:func:`subset_mask`). Parse once with :func:`formula_unit` and pass the :class:`FormulaUnit` on.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from pymatgen.core import Composition

__all__ = [
    "INTEGER_RTOL",
    "MAX_TOTAL_ATOMS",
    "MAX_Z",
    "MIN_AMOUNT",
    "FormulaUnit",
    "anonymous_formula",
    "canonical_formula",
    "element_encoding",
    "formula_unit",
    "is_metal",
    "is_oxide",
    "parse_amounts",
    "parse_composition",
    "reduced_formula",
    "subset_mask",
]

logger = logging.getLogger(__name__)

#: Heaviest supported element: Lr. Magpie's Mendeleev-number table stops there; beyond it every property
#: would be an imputed average.
MAX_Z = 103
#: Smallest accepted amount of one element (pymatgen silently drops amounts below 1e-8).
MIN_AMOUNT = 1e-6
#: Largest accepted number of atoms in the formula unit as written.
MAX_TOTAL_ATOMS = 1000.0
#: Relative tolerance under which an amount in a formula counts as an integer.
INTEGER_RTOL = 1e-6
_LARGEST_MULTIPLIER = 100_000
_NOBLE_GASES = frozenset({"He", "Ne", "Ar", "Kr", "Xe", "Rn"})
# Separators of hydrate / adduct notation, "CuSO4·5H2O"; pymatgen itself rejects them, and reads "." as a
# decimal point ("CuSO4.5H2O" is CuSO4.5 H2 O to pymatgen and to us).
ADDUCT_SEPARATORS = "·•∙⋅*"

BravaisModel = Literal["master", "metal", "oxide"]
#: A parsed formula: atomic numbers and amounts, in the formula's order.
Parsed = tuple[tuple[int, ...], tuple[float, ...]]

_INVALID_RE = re.compile(r"[\s\d.*/]*$")
_GROUP_RE = re.compile(r"([A-Z][a-z]*)\s*([-*\.e\d]*)")
_PAREN_RE = re.compile(r"\(([^\(\)]+)\)\s*([\.e\d]*)")
# The common case: "El<number>" tokens and parentheses with a plain number after them, no spaces.
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_SIMPLE_RE = re.compile(rf"(?:[A-Z][a-z]?{_NUMBER}?|\(|\){_NUMBER}?)+")
_SIMPLE_TOKEN_RE = re.compile(rf"([A-Z][a-z]?)({_NUMBER})?|(\()|\)({_NUMBER})?")
_ADDUCT_RE = re.compile("[" + re.escape(ADDUCT_SEPARATORS) + "]")
_DOTTED_HYDRATE_RE = re.compile(r"\d\.\d*H2O\s*$")  # "CuSO4.5H2O": most likely meant as a hydrate
_ADDUCT_COUNT_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)?\s*(.*?)\s*$", re.DOTALL)


class _FormulaError(ValueError):
    """A reason, without the formula (added by the caller)."""


@functools.lru_cache(maxsize=1)
def _symbol_to_z() -> dict[str, int]:
    from pymatgen.core import Element

    return {Element.from_Z(z).symbol: z for z in range(1, 119)}


@functools.lru_cache(maxsize=1)
def _supported_z() -> dict[str, int]:
    return {symbol: z for symbol, z in _symbol_to_z().items() if z <= MAX_Z}


def _amount(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _FormulaError(f"cannot read amount {text!r} {what}") from None
    if not math.isfinite(value):
        raise _FormulaError(f"amount {text!r} {what} is not finite")
    if value <= 0:
        raise _FormulaError(f"amount {text!r} {what} is not positive")
    return value


def _expand_adducts(formula: str) -> str:
    """Rewrite "A·nB" as "A(B)n", which pymatgen's grammar reads."""
    first, *rest = _ADDUCT_RE.split(formula)
    if not first.strip():
        raise _FormulaError("nothing before an adduct separator")
    parts = [first]
    for part in rest:
        match = _ADDUCT_COUNT_RE.match(part)
        assert match is not None  # the pattern matches any string
        count, body = match.groups()
        if not body:
            raise _FormulaError("nothing after an adduct separator")
        if count is not None:
            _amount(count, f"before {body!r}")
        parts.append(f"({body}){count or ''}")
    return "".join(parts)


def _parse_simple(formula: str) -> dict[str, float]:
    """Fast path of :func:`_parse_symbols` for the common grammar, with the same float arithmetic.

    pymatgen expands the innermost parentheses first, summing ``amount * factor`` per element within the group
    and splicing the result in place; a stack of token lists does the same without rewriting the string.
    """
    tokens = _SIMPLE_TOKEN_RE.findall(formula)
    amounts: dict[str, float] = {}
    if "(" not in formula and ")" not in formula:
        for symbol, text, _, _ in tokens:
            value = float(text) if text else 1.0
            if value == 0:
                raise _FormulaError(f"amount {text!r} of {symbol} is not positive")
            amounts[symbol] = amounts.get(symbol, 0.0) + value
        return amounts
    stack: list[list[tuple[str, float]]] = [[]]
    for symbol, text, opening, factor_text in tokens:
        if symbol:
            value = float(text) if text else 1.0
            if value == 0:
                raise _FormulaError(f"amount {text!r} of {symbol} is not positive")
            stack[-1].append((symbol, value))
        elif opening:
            stack.append([])
        else:
            factor = float(factor_text) if factor_text else 1.0
            if factor == 0:
                raise _FormulaError(f"amount {factor_text!r} after a parenthesis is not positive")
            if len(stack) < 2:
                raise _FormulaError("unbalanced parentheses")
            group: dict[str, float] = {}
            for el, value in stack.pop():
                group[el] = group.get(el, 0.0) + value * factor
            if not group:
                raise _FormulaError("empty parentheses")
            stack[-1].extend(group.items())
    if len(stack) != 1:
        raise _FormulaError("unbalanced parentheses")
    for symbol, value in stack[0]:
        amounts[symbol] = amounts.get(symbol, 0.0) + value
    return amounts


def _parse_symbols(formula: str) -> dict[str, float]:
    """pymatgen's formula grammar (``Composition._parse_formula``), rejecting bad amounts as it goes."""
    if _SIMPLE_RE.fullmatch(formula) is not None:
        return _parse_simple(formula)
    if _ADDUCT_RE.search(formula):
        formula = _expand_adducts(formula)
    if _INVALID_RE.match(formula):
        raise _FormulaError("no element symbols")
    formula = formula.replace("@", "").translate(str.maketrans("[]{}", "()()"))

    def get_sym_dict(form: str, factor: float) -> dict[str, float]:
        sym_dict: dict[str, float] = {}
        for match in _GROUP_RE.finditer(form):
            symbol, text = match[1], match[2].strip()
            value = _amount(text, f"of {symbol}") if text else 1.0
            sym_dict[symbol] = sym_dict.get(symbol, 0.0) + value * factor
            form = form.replace(match.group(), "", 1)
        if form.strip():
            raise _FormulaError(f"cannot parse {form.strip()!r}")
        return sym_dict

    match = _PAREN_RE.search(formula)
    while match:
        factor = _amount(match[2], f"after ({match[1]})") if match[2] != "" else 1.0
        unit_sym_dict = get_sym_dict(match[1], factor)
        expanded = "".join(f"{el}{amt}" for el, amt in unit_sym_dict.items())
        formula = formula.replace(match.group(), expanded, 1)
        match = _PAREN_RE.search(formula)
    return get_sym_dict(formula, 1.0)


def _validate(amounts: Mapping[str, float]) -> Parsed:
    """Check symbols and amounts; return (Z, amount) tuples in the formula's order."""
    supported = _supported_z()
    zs = tuple(supported.get(symbol, 0) for symbol in amounts)
    values = tuple(amounts.values())
    # a NaN anywhere makes the sum NaN and fails the comparison
    if (
        values
        and 0 not in zs
        and min(values) >= MIN_AMOUNT
        and sum(values) <= MAX_TOTAL_ATOMS
        and not _NOBLE_GASES.issuperset(amounts)
    ):
        return zs, values
    raise _FormulaError(_rejection_reason(amounts))


def _rejection_reason(amounts: Mapping[str, float]) -> str:
    if not amounts:
        return "no elements"
    table = _symbol_to_z()
    for symbol, amount in amounts.items():
        z = table.get(symbol)
        if z is None:
            if symbol in ("D", "T"):
                return f"isotope symbol {symbol!r} is not supported (write H)"
            return f"unknown element symbol {symbol!r}"
        if z > MAX_Z:
            return (
                f"element {symbol} (Z={z}) is not supported: the Magpie element tables stop at Lr (Z={MAX_Z})"
            )
        if not math.isfinite(amount) or amount <= 0:
            return f"amount {amount!r} of {symbol} is not a positive finite number"
        if amount < MIN_AMOUNT:
            return f"amount {amount!r} of {symbol} is below the minimum {MIN_AMOUNT:g}"
    total = math.fsum(amounts.values())
    if total > MAX_TOTAL_ATOMS:
        return f"{total:g} atoms per formula unit exceeds the maximum {MAX_TOTAL_ATOMS:g}"
    if _NOBLE_GASES.issuperset(amounts):
        return (
            "only noble gases: their electronegativities and oxidation states, which the ionic and "
            "band-centre features need, are undefined"
        )
    return "rejected"  # pragma: no cover - _validate and this function check the same rules


@functools.lru_cache(maxsize=1 << 16)
def parse_string(formula: str) -> Parsed | str:
    """Parsed formula, or the reason it is rejected (cached: exceptions would not be)."""
    if not formula.strip():
        return "empty formula"
    if _DOTTED_HYDRATE_RE.search(formula):
        logger.warning(
            "%r: '.' is a decimal point, as in pymatgen, not a hydrate dot; write 'A·nH2O' for a hydrate",
            formula,
        )
    try:
        return _validate(_parse_symbols(formula))
    except _FormulaError as exc:
        return str(exc)


def describe_formula(formula: object) -> str:
    if isinstance(formula, str):
        return formula
    try:
        return str(formula.formula)  # type: ignore[attr-defined]
    except Exception:  # only words an error message: never let it raise
        return repr(formula)


def parse_amounts(formula: object) -> Parsed | str:
    from pymatgen.core import Composition, Element

    if isinstance(formula, str):
        return parse_string(formula)
    if isinstance(formula, Composition):
        if not formula.valid:
            return "contains dummy species: " + ", ".join(str(s) for s in formula if not hasattr(s, "Z"))
        amounts: dict[str, float] = {}
        for species, amount in formula.items():
            element = species if isinstance(species, Element) else species.element
            amounts[element.symbol] = amounts.get(element.symbol, 0.0) + float(amount)
        try:
            return _validate(amounts)
        except _FormulaError as exc:
            return str(exc)
    return f"expected a formula string or a pymatgen Composition, got {type(formula).__name__}"


def formula_error(formula: object, reason: str) -> str:
    return f"invalid formula {describe_formula(formula)!r}: {reason}"


def parse_composition(formula: str | Composition) -> Composition:
    """Validate a formula and return it as an element-only pymatgen ``Composition``.

    Accepts pymatgen's formula grammar (``"Ca3(PO4)2"``, fractional ``"La1.8Sr0.2CuO4"``, brackets) plus
    hydrate/adduct notation with "·" (or "•", "∙", "⋅", "*"): ``"CuSO4·5H2O"`` is ``CuSO4(H2O)5``. A "." is
    always a decimal point, as in pymatgen. Oxidation states of a ``Composition`` with species are dropped.

    Raises
    ------
    ValueError
        Naming the formula and the reason when it is not a string or Composition, is empty or unparsable, has a
        zero, negative, non-finite or below-:data:`MIN_AMOUNT` amount, an unknown element, an isotope symbol (D,
        T), an element heavier than Lr (Z > :data:`MAX_Z`), more than :data:`MAX_TOTAL_ATOMS` atoms, or only
        noble gases.
    """
    from pymatgen.core import Composition, Element

    parsed = parse_amounts(formula)
    if isinstance(parsed, str):
        raise ValueError(formula_error(formula, parsed))
    zs, amounts = parsed
    return Composition({Element.from_Z(z): a for z, a in zip(zs, amounts, strict=True)})


# --------------------------------------------------------------------------------------------------------------
# formula units


@dataclass(frozen=True)
class FormulaUnit:
    """The smallest integer formula unit of a formula: what ``Z`` counts in a structure.

    Attributes
    ----------
    formula
        The input formula as given.
    species, counts
        Element symbols (the formula's order) and their integer amounts in the formula unit.
    multiplier
        ``counts = multiplier x`` the input amounts (1 for an integer, reduced formula).
    """

    formula: str
    species: tuple[str, ...]
    counts: tuple[int, ...]
    multiplier: float

    @property
    def n_atoms(self) -> int:
        """Atoms in one formula unit."""
        return sum(self.counts)

    @functools.cached_property
    def reduced_formula(self) -> str:
        """pymatgen's reduced formula of the formula unit."""
        from pymatgen.core import Composition

        return Composition(dict(zip(self.species, self.counts, strict=True))).reduced_formula

    @property
    def text(self) -> str:
        """The formula unit written out in the input's element order, e.g. ``La9SrCu5O20``."""
        return "".join(f"{s}{c if c != 1 else ''}" for s, c in zip(self.species, self.counts, strict=True))

    @functools.cached_property
    def amounts(self) -> dict[int, int]:
        """Atomic number -> amount in the formula unit."""
        table = _symbol_to_z()
        return {table[s]: int(c) for s, c in zip(self.species, self.counts, strict=True)}

    @property
    def anonymous(self) -> str:
        """The anonymous formula, amounts ascending: ``"ABC3"``."""
        return anonymous_of(self.counts)


def _parse_for_structures(formula: str) -> Composition:
    try:
        return parse_composition(formula)
    except ValueError as exc:
        raise ValueError(
            f"{exc}; give a chemical formula with element symbols and amounts, e.g. 'Li7La3Zr2O12' or "
            f"'La1.8Sr0.2CuO4'"
        ) from exc


def formula_unit(formula: str, max_atoms: int) -> FormulaUnit:
    """The smallest integer formula unit of ``formula`` (parsed once, here).

    A non-integer formula (``La1.8Sr0.2CuO4``) uses the smallest integer multiple of it (``La9SrCu5O20``); an
    amount counts as an integer within :data:`INTEGER_RTOL` (relative). Nothing is rounded silently.

    Raises
    ------
    ValueError
        Naming the formula, when it cannot be parsed, has no integer multiple up to x100000, or its formula unit
        has more than ``max_atoms`` atoms.
    """
    if not isinstance(formula, str):
        raise ValueError(f"formula must be a string, got {type(formula).__name__}")
    comp = _parse_for_structures(formula)
    species = tuple(el.symbol for el in comp.elements)
    amounts = np.array([float(comp[el]) for el in comp.elements])
    m = 0
    for lo, hi in ((1, 1), (2, 1000), (1001, _LARGEST_MULTIPLIER)):  # integer formulas stop at once
        multipliers = np.arange(lo, hi + 1, dtype=np.float64)[:, None]
        scaled = multipliers * amounts[None, :]
        near = (np.abs(scaled - np.rint(scaled)) <= INTEGER_RTOL * np.abs(scaled)) & (np.rint(scaled) >= 1)
        hits = np.flatnonzero(near.all(axis=1))
        if len(hits):
            m = lo + int(hits[0])
            break
    if not m:
        raise ValueError(
            f"formula {formula!r} has amounts {amounts.tolist()} with no integer multiple up to "
            f"x{_LARGEST_MULTIPLIER} (tolerance {INTEGER_RTOL:g} relative): a crystal structure needs an integer "
            f"formula unit; give the amounts as exact fractions (e.g. La1.8Sr0.2CuO4) or an integer formula"
        )
    ints = [round(v) for v in m * amounts]
    g = math.gcd(*ints)
    counts = tuple(i // g for i in ints)
    fu = FormulaUnit(formula=formula, species=species, counts=counts, multiplier=m / g)
    if fu.n_atoms > max_atoms:
        what = "formula unit" if m == 1 else f"smallest integer multiple of {formula!r}"
        raise ValueError(
            f"formula {formula!r}: the {what} is {fu.text} with {fu.n_atoms} atoms, more than max_atoms="
            f"{max_atoms}; raise max_atoms (at least {fu.n_atoms}) to build structures for it"
        )
    return fu


# --------------------------------------------------------------------------------------------------------------
# reduced, anonymous and canonical forms


def reduced_formula(formula: str | Composition) -> str | None:
    """pymatgen's reduced formula of ``formula``, or ``None`` when it does not parse (lenient: data tables)."""
    import warnings

    from pymatgen.core import Composition, Element

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            comp = Composition(formula) if isinstance(formula, str) else formula
        # pymatgen accepts dummy species such as "Xx"; real elements only here
        if comp.num_atoms <= 0 or not all(isinstance(el, Element) for el in comp.elements):
            return None
        return comp.reduced_formula
    except Exception:  # pymatgen raises several types for bad formulas
        return None


def reduced_formula_of_numbers(numbers: np.ndarray) -> tuple[str, int]:
    """Reduced formula (pymatgen's) and atoms per formula unit of a list of atomic numbers (a structure's)."""
    from pymatgen.core import Composition
    from pymatgen.core.periodic_table import Element

    uniq, counts = np.unique(numbers, return_counts=True)
    comp = Composition({Element.from_Z(int(z)): int(n) for z, n in zip(uniq, counts, strict=True)})
    reduced, _factor = comp.get_reduced_composition_and_factor()
    return reduced.reduced_formula, round(reduced.num_atoms)


def integer_amounts(composition: Composition) -> dict[int, int]:
    """Atomic number -> amount in the reduced integer formula of an integer composition.

    Raises
    ------
    ValueError
        For non-integer amounts.
    """
    amounts = {el.Z: float(n) for el, n in composition.element_composition.items() if n > 0}
    values = list(amounts.values())
    if any(abs(v - round(v)) > 1e-6 for v in values):
        raise ValueError(
            f"{composition.formula!r} has non-integer amounts; templates need an integer formula"
        )
    ints = {z: round(v) for z, v in amounts.items()}
    g = math.gcd(*ints.values())
    return {z: n // g for z, n in ints.items()}


def anonymous_of(amounts: Iterable[int]) -> str:
    """Anonymous formula of integer amounts, ascending: ``(1, 1, 3)`` -> ``"ABC3"``."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    parts = []
    for i, n in enumerate(sorted(amounts)):
        parts.append(f"{letters[i] if i < 26 else f'X{i}'}{n if n != 1 else ''}")
    return "".join(parts)


def anonymous_formula(formula: str | Composition) -> str:
    """The anonymous formula of a composition's reduced integer formula, amounts ascending: ``"ABC3"``.

    Equal to pymatgen's ``Composition.anonymized_formula`` for integer formulas.
    """
    from pymatgen.core import Composition

    comp = Composition(formula) if isinstance(formula, str) else formula
    return anonymous_of(integer_amounts(comp).values())


def canonical_formula(formula: str) -> str:
    """``formula`` in one spelling per composition (pymatgen's element order, no 1s): ``ClNa`` -> ``NaCl``.

    Raises
    ------
    ValueError
        If the formula cannot be parsed.
    """
    comp = parse_composition(formula)
    parts = []
    for token in comp.formula.split():
        m = re.fullmatch(r"([A-Z][a-z]*)([0-9.]+)", token)
        if m is None:  # pragma: no cover - pymatgen always writes Element+amount
            raise ValueError(f"cannot read pymatgen formula token {token!r}")
        el, amount = m.groups()
        parts.append(el if amount == "1" else el + amount)
    return "".join(parts)


@functools.cache
def element_symbol(z: int) -> str:
    """Symbol of atomic number ``z``."""
    from pymatgen.core import Element

    return Element.from_Z(int(z)).symbol


# --------------------------------------------------------------------------------------------------------------
# the paper's Metal and Oxide subsets


@functools.lru_cache(maxsize=65536)
def _element_symbols(formula: str) -> frozenset[str]:
    # The featurizer's parser, so that "a formula" means the same everywhere (it raises ValueError).
    return frozenset(el.symbol for el in parse_composition(formula).elements)


def is_oxide(formula: str) -> bool:
    """Whether ``formula`` contains oxygen (the paper's Oxide subset).

    Raises
    ------
    ValueError
        If the formula cannot be parsed.
    """
    return "O" in _element_symbols(formula)


@functools.lru_cache(maxsize=256)
def _is_metal_element(symbol: str) -> bool:
    from pymatgen.core import Element

    el = Element(symbol)
    return bool(
        el.is_alkali
        or el.is_alkaline
        or el.is_transition_metal
        or el.is_post_transition_metal
        or el.is_lanthanoid
        or el.is_actinoid
    )


def is_metal(formula: str) -> bool:
    """Whether every element of ``formula`` is a metal (the paper's Metal subset).

    Metals are the alkali, alkaline-earth, transition, post-transition, lanthanoid and actinoid elements as
    pymatgen's :class:`~pymatgen.core.Element` classifies them (metalloids such as Si, Ge, Sb are not).

    Raises
    ------
    ValueError
        If the formula cannot be parsed.
    """
    return all(_is_metal_element(s) for s in _element_symbols(formula))


def subset_mask(formulas: Iterable[str], subset: BravaisModel) -> np.ndarray:
    """Boolean mask of the formulas in a Bravais model's domain (unparseable formulas are False)."""
    if subset not in get_args(BravaisModel):
        raise ValueError(f"Unknown {subset=}; choose from {get_args(BravaisModel)}")
    test = {"master": lambda f: True, "metal": is_metal, "oxide": is_oxide}[subset]
    out = []
    for f in formulas:
        try:
            out.append(bool(test(f)))
        except ValueError:
            out.append(False)
    return np.asarray(out, dtype=bool)


def canonical_elements(amounts: dict[int, int]) -> list[int]:
    """Elements ordered by (amount, atomic number): the order in which template sites are stored."""
    return sorted(amounts, key=lambda z: (amounts[z], z))


def element_encoding(formulas: Sequence[object], max_elements: int = 12) -> np.ndarray:
    """The weighted set of elements of each formula as a float32 array ``(n, 2 * max_elements)``.

    The first ``max_elements`` columns hold the atomic numbers, most abundant element first (0 pads), the last
    ``max_elements`` their atomic fractions; a formula that does not parse is all zeros, and one with more
    elements keeps its ``max_elements`` most abundant (fractions renormalised). This is the input of the
    composition-learning model (:class:`cryspnet_gen.nn.ElementAttention`).
    """
    out = np.zeros((len(formulas), 2 * max_elements), dtype=np.float32)
    for i, formula in enumerate(formulas):
        parsed = parse_amounts(formula)
        if isinstance(parsed, str):
            continue
        pairs = sorted(zip(parsed[1], parsed[0], strict=True), key=lambda p: (-p[0], p[1]))[:max_elements]
        total = sum(a for a, _ in pairs)
        for j, (amount, z) in enumerate(pairs):
            out[i, j] = z
            out[i, max_elements + j] = amount / total
    return out
