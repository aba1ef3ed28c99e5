"""Moved: template candidates live in :mod:`cryspnet_gen.sources.templates` (store, building, substitution,
scoring, candidates) and merging in :mod:`cryspnet_gen.ranking`.

This module keeps the old import path ``cryspnet_gen.templates`` working for code that holds it.
"""

from cryspnet_gen.formula import anonymous_formula
from cryspnet_gen.ranking import cryspnet_needed, merge_candidates
from cryspnet_gen.sources.templates import (
    ENV_VAR,
    STORE_VERSION,
    BuildReport,
    TemplateOption,
    TemplateRecord,
    TemplateScoring,
    TemplateStore,
    TemplateStoreError,
    build_option,
    build_store,
    load_store,
    rank_options,
    records_from_data_dir,
    records_from_folder,
    records_from_materials_project,
    resolve_store,
    substitution_matrix,
    template_candidates,
)

__all__ = [
    "ENV_VAR",
    "STORE_VERSION",
    "BuildReport",
    "TemplateOption",
    "TemplateRecord",
    "TemplateScoring",
    "TemplateStore",
    "TemplateStoreError",
    "anonymous_formula",
    "build_option",
    "build_store",
    "cryspnet_needed",
    "load_store",
    "merge_candidates",
    "rank_options",
    "records_from_data_dir",
    "records_from_folder",
    "records_from_materials_project",
    "resolve_store",
    "substitution_matrix",
    "template_candidates",
]
