"""Floors in order: no module of pyjama imports a module of a higher floor, and the
import graph has no cycle. Imports inside functions count too (a lazy import is still a
dependency). Read from the source with ast, nothing is imported."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PKG = REPO / "pyjama"

# lowest first; a module may import its own floor or lower ones
FLOORS = [
    ["pyjama", "pyjama.errors", "pyjama.flags", "pyjama.alloc"],    # alloc: glibc's malloc thresholds
    ["pyjama.timewindow", "pyjama.rules", "pyjama.progress"],
    ["pyjama.io", "pyjama.config", "pyjama.tidy", "pyjama.losses"],   # losses: the lost-data texts
    # pure kernels: frames and parameters in, frames out
    ["pyjama.parse", "pyjama.qc", "pyjama.resample", "pyjama.transform", "pyjama.normalise",
     "pyjama.behaviour", "pyjama.aggregate", "pyjama.db"],
    ["pyjama.steps", "pyjama.steps.*"],              # the step registry and the steps
    ["pyjama.pipeline"],                             # step configs bound to steps, wiring
    ["pyjama.project"],                              # + raw index
    ["pyjama.workflow", "pyjama.runner", "pyjama.workers", "pyjama.keep", "pyjama.verdict",
     "pyjama.runlock"],                              # plan, run (in worker processes), keep, verdicts, locks
    ["pyjama.demo", "pyjama.manage"],                # exposures and their demo data
    ["pyjama.status", "pyjama.dag", "pyjama.report", "pyjama.results", "pyjama.docs_gen"],   # views
    ["pyjama.cli", "pyjama.drawer"],                 # command lines only
]


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def floor_of(mod: str) -> int:
    for i, names in enumerate(FLOORS):
        for n in names:
            if mod == n or (n.endswith(".*") and mod.startswith(n[:-1])):
                return i
    raise AssertionError(f"{mod}: not on any floor of tests/test_layers.py; add it to FLOORS")


def imports_of(path: Path) -> set:
    """pyjama modules ``path`` imports (anywhere in the file, also inside functions)."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "pyjama")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "pyjama":
                continue
            for a in node.names:   # `from . import io` imports the module pyjama.io
                sub = f"{target}.{a.name}"
                out.add(sub if (PKG.parent / (sub.replace(".", "/") + ".py")).exists()
                        or (PKG.parent / sub.replace(".", "/")).is_dir() else target)
    out.discard(mod)
    return out


def graph() -> dict:
    return {module_name(p): imports_of(p) for p in sorted(PKG.rglob("*.py"))}


def test_no_import_goes_up_a_floor():
    upward = []
    for mod, deps in graph().items():
        for dep in sorted(deps):
            if floor_of(dep) > floor_of(mod):
                upward.append(f"{mod} (floor {floor_of(mod)}) imports {dep} (floor {floor_of(dep)})")
    assert upward == []


def test_import_graph_has_no_cycle():
    g = graph()
    # the package's own __init__ is imported by every submodule (Python does it): leave out
    # edges INTO a package from its own submodules
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if m.startswith(d + "."):
                continue
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d in g and not state.get(d):
                visit(d)
        stack.pop()
        state[m] = 2

    for m in g:
        if not state.get(m):
            visit(m)
    assert cycles == []


def test_the_checker_names_an_upward_pair(tmp_path):
    """The check is not vacuous: the parser sees a lazy import inside a function."""
    src = tmp_path / "pyjama" / "config.py"
    src.parent.mkdir()
    src.write_text("def f():\n    from .steps import get_step\n    return get_step\n")
    global REPO, PKG
    saved = REPO, PKG
    REPO, PKG = tmp_path, tmp_path / "pyjama"
    try:
        assert imports_of(src) == {"pyjama.steps"}
    finally:
        REPO, PKG = saved
    assert floor_of("pyjama.steps") > floor_of("pyjama.config")
