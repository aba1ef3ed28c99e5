"""The package layout: layers (import-linter), module and function sizes, private names, old import paths,
and the one formula parse per call."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import cryspnet_gen

PACKAGE = Path(cryspnet_gen.__file__).resolve().parent
REPO = PACKAGE.parent
MAX_MODULE_LINES = 900
MAX_FUNCTION_LINES = 120


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def test_layers_contract_holds():
    """import-linter's contracts in pyproject.toml: layers, independent sources, no workflow extras in the core."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe is not None, "import-linter is a dev dependency: pip install -e '.[dev]'"
    proc = subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "broken" not in proc.stdout.split("Contracts:")[-1].lower().replace("0 broken", "")


def test_module_and_function_sizes():
    too_long = []
    for path in _modules():
        text = path.read_text(encoding="utf-8")
        n = len(text.splitlines())
        if n > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(REPO)}: {n} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(REPO)}:{node.name}: {length} lines")
    assert not too_long, too_long


def test_no_private_names_cross_module_lines():
    found = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cryspnet_gen"):
                if node.module == _module_name(path):
                    continue
                found += [
                    f"{path.relative_to(REPO)}: {a.name} from {node.module}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert not found, found


def test_no_import_cycles_inside_the_package():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("cryspnet_gen")
    modules = sorted(graph.modules)
    cycles = []
    for m in modules:
        for other in graph.find_modules_directly_imported_by(m):
            if other != m and graph.chain_exists(importer=other, imported=m):
                cycles.append((m, other))
    assert not cycles, cycles[:10]


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("cryspnet_gen.generate", "generate_candidates"),
        ("cryspnet_gen.generate", "generate_many"),
        ("cryspnet_gen.generate", "write_candidates"),
        ("cryspnet_gen.generate", "read_candidates"),
        ("cryspnet_gen.generate", "Candidate"),
        ("cryspnet_gen.generate", "CandidateList"),
        ("cryspnet_gen.generate", "GenerationError"),
        ("cryspnet_gen.generate", "relax_and_rerank"),
        ("cryspnet_gen.templates", "TemplateStore"),
        ("cryspnet_gen.templates", "template_candidates"),
        ("cryspnet_gen.templates", "merge_candidates"),
        ("cryspnet_gen.templates", "build_store"),
        ("cryspnet_gen.templates", "anonymous_formula"),
        ("cryspnet_gen.predict", "Prediction"),
        ("cryspnet_gen.predict", "save_bundle"),
        ("cryspnet_gen.predict", "is_oxide"),
        ("cryspnet_gen.workflows.relax", "RelaxedCandidate"),
        ("cryspnet_gen.workflows.relax", "relax_candidates"),
        ("cryspnet_gen", "GenerateOptions"),
        ("cryspnet_gen", "generate_many"),
    ],
)
def test_old_import_paths_keep_working(module, name):
    import importlib

    assert getattr(importlib.import_module(module), name) is not None


def test_moved_name_that_does_not_exist_says_where_code_went():
    import cryspnet_gen.templates as shim

    with pytest.raises(AttributeError, match=r"sources\.templates"):
        shim.no_such_name  # noqa: B018


def test_formula_is_parsed_once_per_call(monkeypatch):
    """generate_candidates reads the formula text once: every later step takes the parsed formula unit."""
    import cryspnet_gen.formula as formula
    from cryspnet_gen.generate import generate_candidates
    from cryspnet_gen.predict import load_predictor

    predictor = load_predictor()
    calls: list[str] = []
    original = formula._parse_symbols

    def counting(text: str) -> dict[str, float]:
        calls.append(text)
        return original(text)

    monkeypatch.setattr(formula, "_parse_symbols", counting)
    formula.parse_string.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cands = generate_candidates("NaCl", k=1, predictor=predictor, space_groups=[225], timeout=30)
    assert len(cands) == 1
    assert calls == ["NaCl"]
