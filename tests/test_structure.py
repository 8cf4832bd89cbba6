"""The package's import graph has no circle (imports inside functions and of parent packages count
too): the share server reaches the session only through vllama_jupyter.seam."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "vllama_jupyter"


def module_of(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, files: set[str]) -> set[str]:
    """The package modules `path` imports. `from X import a` counts X.a when it is a module and X
    itself (its __init__, a parent package included) when a name is taken from it."""
    here = module_of(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module or ""
            subs = {f"{mod}.{a.name}" for a in node.names}
            found.update(subs & files)
            if subs - files:
                found.add(mod)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.Constant) and node.value in files and "." in node.value:
            found.add(node.value)   # a module imported by name (importlib.import_module)
    return found


def graph() -> dict[str, set[str]]:
    files = {module_of(p): p for p in PKG.rglob("*.py")}
    return {m: {i for i in imports(p, set(files)) if i in files and i != m} for m, p in files.items()}


def test_no_import_circle():
    g = graph()
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(g[m]):
            assert state.get(n) != 1, " -> ".join(path[path.index(n):] + [n]) if n in path else n
            if n not in state:
                visit(n, path + [n])
        state[m] = 2
    for m in sorted(g):
        if m not in state:
            visit(m, [m])


SHARE = ("share_server", "share_handlers", "share_agents", "sharing")


def test_the_share_server_does_not_reach_into_the_session():
    g = graph()
    assert not any("vllama_jupyter.session" in g[f"vllama_jupyter.{m}"] for m in SHARE)
    assert "vllama_jupyter.seam" in g["vllama_jupyter.share_handlers"] and "vllama_jupyter.seam" in g["vllama_jupyter.share_agents"]
    assert not any("_notify" in (PKG / f"{m}.py").read_text() for m in SHARE)
