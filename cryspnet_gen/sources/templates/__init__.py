"""Template candidates: known structures of the same stoichiometry type, substituted, scaled and ranked.

Random Wyckoff placement in a predicted space group rarely reproduces a real structure; most compounds,
however, share their anonymous formula (``ABC3``) and space group with some known compound. This module keeps a
*template store* of known structures and turns the templates of a formula's anonymous formula into candidates:

1. **Store** (:func:`build_store`, ``cryspnet-gen templates build``): ordered structures from a data folder like
   ``../shared/data`` (its Materials Project CIFs), a folder of CIF / POSCAR / pymatgen-JSON files, or the
   Materials Project API (``mp-api``, needs an API key). Each entry keeps its cell, its space group (spglib,
   symprec 0.1, as everywhere in this package), the Wyckoff letters of each element and the energy above hull
   when known. The store is a folder (``templates.parquet`` + ``manifest.json``) that lives outside the package:
   pass it as ``templates=`` or set ``CRYSPNET_GEN_TEMPLATES``. Loading indexes it by anonymous formula, so a
   look-up takes milliseconds.
2. **Substitution**: the formula's elements are mapped onto the template's elements of the same amount (every
   such one-to-one mapping is scored). The substitution likelihood is the mean over elements of
   ``log P(target element | template element)`` from Hautier et al.'s data-mined ionic substitution model
   (pymatgen's :class:`~pymatgen.analysis.structure_prediction.substitution_probability.SubstitutionProbability`,
   which ships with pymatgen: the conditional probability that the structure predictor of that paper uses). It is
   defined for ions; since oxidation states cannot be assigned reliably to the intermetallics that are a large
   part of MP, each element pair takes the largest value over the two elements' oxidation states in the table. The
   8 elements the table lacks (noble gases, Pm, At, Rn, Fr, Ra) fall back to the table's "never observed" value
   minus a Mendeleev-number distance (Pettifor's chemical scale), identity always scoring highest.
3. **Scaling**: the cell is scaled isotropically to the predicted volume per atom (CRYSPNet's volume model; the
   template's own volume when there is no prediction); the template's space group is checked on the result.
4. **Score** (log scale, higher is better; :class:`TemplateScoring`)::

       score = w_model x log max(P(lattice) x P(group | lattice), p_floor)   # CRYSPNet, the template's group
             + w_substitution x substitution log-likelihood
             + w_prevalence x log(number of stored entries with this anonymous formula and group)

   CRYSPNet's own candidates get ``w_model x log P(lattice) x P(group | lattice) + cryspnet_offset`` so that both
   sources rank in one list (:func:`merge_candidates`). The weights were tuned on validation formulas (never test ones):
   see ``docs/benchmarks.md``.

Templates of one structure type often map onto the same candidate; candidates are de-duplicated first by
(group, element -> Wyckoff letters) and then with pymatgen's ``StructureMatcher``.

Modules: :mod:`~.store` (the store folder and its index), :mod:`~.build` (building stores),
:mod:`~.substitution` (substitution table and element mappings), :mod:`~.scoring` (options and their score),
:mod:`~.source` (:func:`template_candidates`). Merging with other sources is :mod:`cryspnet_gen.ranking`.
"""

from cryspnet_gen.formula import anonymous_formula
from cryspnet_gen.sources.templates.build import (
    BuildReport,
    TemplateRecord,
    build_store,
    records_from_data_dir,
    records_from_folder,
    records_from_materials_project,
)
from cryspnet_gen.sources.templates.locate import (
    BENCH_LIBRARY,
    DEFAULT_LIBRARY,
    available_libraries,
    load_store,
    resolve_store,
    shipped_library,
)
from cryspnet_gen.sources.templates.prototypes import PrototypeLibrary, load_library
from cryspnet_gen.sources.templates.scoring import TemplateOption, TemplateScoring, build_option, rank_options
from cryspnet_gen.sources.templates.source import template_candidates
from cryspnet_gen.sources.templates.store import ENV_VAR, STORE_VERSION, TemplateStore, TemplateStoreError
from cryspnet_gen.sources.templates.substitution import substitution_matrix

__all__ = [
    "BENCH_LIBRARY",
    "DEFAULT_LIBRARY",
    "ENV_VAR",
    "STORE_VERSION",
    "BuildReport",
    "PrototypeLibrary",
    "TemplateOption",
    "TemplateRecord",
    "TemplateScoring",
    "TemplateStore",
    "TemplateStoreError",
    "anonymous_formula",
    "available_libraries",
    "build_option",
    "build_store",
    "load_library",
    "load_store",
    "rank_options",
    "records_from_data_dir",
    "records_from_folder",
    "records_from_materials_project",
    "resolve_store",
    "shipped_library",
    "substitution_matrix",
    "template_candidates",
]
