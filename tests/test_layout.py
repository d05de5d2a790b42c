"""The layout of docs/DESIGN.md, checked on the source: experiments -> analysis -> probes ->
resnet_lab, the instruments know only the tap contract, and resnet_lab's rooms (networks,
engine, io, runs) point one way.

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
    "probes": ("resnet_lab.networks.taps",),
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


# resnet_lab's rooms (docs/DESIGN.md) and the rooms each may import: runs -> engine -> networks,
# and io (run folders, signals, one-line errors) beneath the engine and the runs. The package's
# face (__init__, __main__) and the figure style (plotting) sit above them all.
RESNET_LAB_ROOMS = {"networks": (), "io": (), "engine": ("networks", "io"),
                    "runs": ("engine", "networks", "io")}


def _resolved_imports(path: Path):
    """(line, absolute module) of every import in ``path``, relative ones resolved."""
    rel = path.relative_to(ROOT)
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = rel.parts[:len(rel.parts) - node.level] if node.level else ()
            module = ".".join(base + ((node.module,) if node.module else ()))
            yield node.lineno, module
            yield from ((node.lineno, f"{module}.{a.name}") for a in node.names)


def test_resnet_lab_rooms_import_only_what_lies_below_them():
    found = {p.name for p in (ROOT / "resnet_lab").iterdir() if (p / "__init__.py").exists()}
    assert found == set(RESNET_LAB_ROOMS), found
    bad = []
    for room, allowed in RESNET_LAB_ROOMS.items():
        for path in sorted((ROOT / "resnet_lab" / room).rglob("*.py")):
            for line, name in _resolved_imports(path):
                parts = name.split(".")
                if parts[0] == "resnet_lab" and len(parts) > 1 and parts[1] != room and \
                        parts[1] not in allowed and parts[1] in RESNET_LAB_ROOMS:
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
                elif parts[0] == "resnet_lab" and len(parts) > 1 and parts[1] not in RESNET_LAB_ROOMS:
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {name} (above the rooms)")
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


def _analysis_imports() -> dict:
    """{analysis module: the analysis modules it imports}, from the source text."""
    graph = {}
    for path in sorted((ROOT / "analysis").glob("*.py")):
        name = path.stem
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level == 1:
                    deps |= {module} if module else {a.name for a in node.names}
                elif module.startswith("analysis"):
                    deps |= {module.split(".")[1]} if "." in module else {a.name for a in node.names}
        graph[name] = {d for d in deps if (ROOT / "analysis" / f"{d}.py").exists() and d != name}
    return graph


def test_no_experiment_module_imports_another_and_analysis_is_shallow():
    """What experiments share lives in shared modules (measures, figures, claims, controls,
    tables): no experiment module imports another, and the analysis package is at most four
    layers deep (a module's layer: one more than the deepest module it imports)."""
    import analysis
    graph = _analysis_imports()
    for name in analysis.EXPERIMENTS:
        assert not graph[name] & set(analysis.EXPERIMENTS), f"analysis/{name}.py imports an experiment"
    depth = {}

    def layer(name):
        if name not in depth:
            depth[name] = 1 + max((layer(d) for d in graph[name]), default=0)
        return depth[name]
    assert max(layer(n) for n in graph) <= 4, depth


def test_no_function_is_longer_than_60_lines():
    long = []
    for package in (*PACKAGES, "experiments"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                        node.end_lineno - node.lineno + 1 > 60:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not long, "\n".join(long)
