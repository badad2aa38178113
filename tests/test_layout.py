"""The import graph of the project's own modules: which package may use which, and no cycles.

    common    <- everything (imports nothing of the project)
    envs      <- simulation only: no datasets, demos, policy
    datasets  <- data only: no envs, demos, policy
    policy    <- networks only: no envs, datasets, demos
    demos     <- between envs and datasets (demonstration producers)
    runlib, config, train, eval, compare, distill, export, bench  <- the entry points and what they share
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "envs", "datasets", "policy", "demos")
TOP_MODULES = ("runlib", "config", "train", "eval", "compare", "distill", "export")
FORBIDDEN = {
    "common": {"envs", "datasets", "policy", "demos", *TOP_MODULES},
    "envs": {"datasets", "policy", "demos", *TOP_MODULES},
    "datasets": {"envs", "policy", "demos", *TOP_MODULES},
    "policy": {"envs", "datasets", "demos", *TOP_MODULES},
    "demos": {"policy", *TOP_MODULES},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_imports(path: Path) -> set[str]:
    """Modules of the project that `path` imports (anywhere in the file, lazy imports included)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            # `from pkg import mod` imports pkg.mod when it is a module of the project
            targets = [f"{prefix}.{a.name}" if (REPO / Path(*f"{prefix}.{a.name}".split("."))).with_suffix(".py")
                       .is_file() else prefix for a in node.names]
        else:
            continue
        found |= {t for t in targets if t.split(".")[0] in (*PACKAGES, *TOP_MODULES)}
    return found


def project_files() -> list[Path]:
    files = [REPO / f"{m}.py" for m in TOP_MODULES]
    for package in PACKAGES:
        files += sorted((REPO / package).rglob("*.py"))
    return files


def import_graph() -> dict[str, set[str]]:
    return {module_name(f): project_imports(f) for f in project_files()}


def test_packages_import_only_what_they_may():
    wrong = [f"{module} imports {target}" for module, targets in import_graph().items()
             for target in targets if target.split(".")[0] in FORBIDDEN.get(module.split(".")[0], set())]
    assert not wrong, "\n".join(wrong)


def test_import_graph_has_no_cycle():
    graph = import_graph()

    def resolve(target: str) -> str | None:  # `import a.b.c` -> the deepest module of the project it names
        while target and target not in graph:
            target = target.rpartition(".")[0]
        return target or None

    edges = {m: {r for t in ts if (r := resolve(t)) and r != m} for m, ts in graph.items()}
    # A package's __init__ importing its own submodules is how packages work, not a cycle of the design.
    edges = {m: {t for t in ts if not (t.startswith(m + ".") and (REPO / m.replace(".", "/")).is_dir())}
             for m, ts in edges.items()}
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_no_entry_point_uses_train_py_as_a_library():
    """eval.py, the bench scripts and the packages get checkpoints, devices and W&B from runlib, not train.py;
    compare.py and distill.py import train.train only to run trainings."""
    users = {m for m, ts in import_graph().items() if "train" in ts}
    assert users <= {"compare", "distill"}, users
    for path in sorted((REPO / "bench").glob("*.py")):
        assert "train" not in project_imports(path), path
