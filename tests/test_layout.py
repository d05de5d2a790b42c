"""The layout of docs/DESIGN.md, checked on the source: experiments -> analysis -> probes ->
resnet_lab, and the instruments know only the tap contract.

Read from the import statements (not by importing), so a violation names its file and line.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("analysis", "probes", "resnet_lab")
# What each package may import from the others (module prefixes).
ALLOWED = {
    "analysis": ("probes", "resnet_lab"),
    "probes": ("resnet_lab.taps",),
    "resnet_lab": (),
}


def project_imports(path: Path):
    """(line, module) of every absolute import of one of PACKAGES in ``path``."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                yield node.lineno, name


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_what_lies_below_it(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, name in project_imports(path):
            top = name.split(".")[0]
            if top != package and not any(name == a or name.startswith(a + ".") for a in ALLOWED[package]):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not bad, "\n".join(bad)


def test_every_experiment_has_its_module_and_its_script():
    import analysis
    for name in analysis.EXPERIMENTS:
        assert (ROOT / "analysis" / f"{name}.py").exists()
        assert (ROOT / "experiments" / f"{name}.py").exists()


def test_the_instrument_never_imports_its_adapters():
    """probes.adapters (tapping, lightning, tensorboard) import the instrument, never the reverse
    (the package's __init__ re-exports tap_model for convenience)."""
    bad = []
    for path in sorted((ROOT / "probes").rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[1] == "adapters" or rel == Path("probes/__init__.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                base = () if node.level == 0 else rel.parts[:len(rel.parts) - node.level]
                target = ".".join(base + ((node.module,) if node.module else ()))
                names = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            if any(n == "probes.adapters" or n.startswith("probes.adapters.") for n in names):
                bad.append(f"{rel}:{node.lineno} imports probes.adapters")
    assert not bad, "\n".join(bad)
