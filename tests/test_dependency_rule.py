"""The dependency rule of docs/architecture.md, read from the source: every import of every module — those inside
functions too — points only at the layers its folder may use. Every top-level folder holding Python is covered;
`tests/` may import anything, and nothing imports `tests/`."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Folder → the project packages it may import (besides itself). Lower layers first.
ALLOWED = {
    "fileio": set(),
    "schemas": set(),
    # Reading a converted directory (manifest, shards, records, frames at a size): every reader above the seam.
    "shards": {"schemas", "fileio"},
    "encoders": {"schemas", "fileio"},
    "adapters": {"schemas", "fileio"},
    "samples": {"adapters", "schemas", "fileio"},
    "pipelines": {"adapters", "encoders", "shards", "schemas", "fileio"},
    "trainer": {"shards", "schemas", "fileio"},
    "simulator": {"trainer", "encoders", "shards", "schemas", "fileio"},
    # Agents use the simulator's public interface; samples/ for the world's facts (tabletop_spec) and, in
    # agents/world.py only, the physics world they are judged in (test_agents checks learning never loads it).
    "agents": {"simulator", "samples", "shards", "schemas", "fileio"},
    # The command line (`unisim/`: `unisim.cli`, `unisim.demo`) sits on top: it may use every layer, none may use it.
    "unisim": {"adapters", "pipelines", "trainer", "simulator", "agents", "samples", "encoders", "shards", "schemas",
               "fileio"},
}
# Benchmarks measure every layer from outside, as a user's script would: anything of ours but tests/.
ALLOWED["bench"] = set(ALLOWED) | {"unisim"}
CLI_MODULES = {"cli", "demo"}  # `unisim.cli…` and `unisim.demo` live in the folder unisim/
# Third-party packages a folder must never import: the trainer and simulator run without Beam or TensorFlow.
FORBIDDEN = {
    "fileio": {"apache_beam", "tensorflow", "tensorflow_datasets"},
    "schemas": {"apache_beam", "tensorflow", "tensorflow_datasets", "jax"},
    "shards": {"apache_beam", "tensorflow", "tensorflow_datasets", "jax", "torch"},
    "encoders": {"apache_beam", "tensorflow", "tensorflow_datasets", "jax"},
    "adapters": {"apache_beam", "jax"},
    "trainer": {"apache_beam", "tensorflow", "tensorflow_datasets", "torch"},
    "simulator": {"apache_beam", "tensorflow", "tensorflow_datasets"},
    "agents": {"apache_beam", "tensorflow", "tensorflow_datasets"},
}


def _imports(path: str) -> set[str]:
    """Top-level names imported by a module: project packages as their folder ("schemas"), others as themselves."""
    names = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        modules = []
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [f"{node.module}.{a.name}" if node.module == "unisim" else node.module for a in node.names]
        for module in modules:
            parts = module.split(".")
            name = parts[1] if parts[0] == "unisim" and len(parts) > 1 else parts[0]
            names.add("unisim" if parts[0] == "unisim" and name in CLI_MODULES else name)
    return names


def _modules(folder: str):
    for directory, _, names in os.walk(os.path.join(ROOT, folder)):
        for name in sorted(names):
            if name.endswith(".py"):
                yield os.path.join(directory, name)


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_imports_point_down_the_layers_only(folder):
    layers = set(ALLOWED)
    bad = []
    for path in _modules(folder):
        imported = _imports(path)
        for name in sorted((imported & layers) - ALLOWED[folder] - {folder}):
            bad.append(f"{os.path.relpath(path, ROOT)} imports {name}")
        for name in sorted(imported & FORBIDDEN.get(folder, set())):
            bad.append(f"{os.path.relpath(path, ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_every_folder_with_python_is_covered():
    folders = {name for name in os.listdir(ROOT) if os.path.isdir(os.path.join(ROOT, name))
               and not name.startswith(".") and not name.endswith(".egg-info") and any(_modules(name))}
    assert folders - set(ALLOWED) - {"tests"} == set()


def test_nothing_imports_the_tests():
    """The tests' helpers are not a library: what a benchmark needs (fixture writers, countfs) lives in
    samples/fixtures/. A module outside tests/ that imports one of tests/' modules (through `sys.path`) fails here."""
    test_modules = {name[:-3] for name in os.listdir(os.path.join(ROOT, "tests")) if name.endswith(".py")}
    bad = [f"{os.path.relpath(path, ROOT)} imports {sorted(_imports(path) & test_modules)}"
           for folder in sorted(ALLOWED) for path in _modules(folder) if _imports(path) & test_modules]
    assert not bad, "\n".join(bad)


def test_the_check_sees_a_violation(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text("def f():\n    from unisim.pipelines import convert\n    import apache_beam\n")
    assert {"pipelines", "apache_beam"} <= _imports(str(module))
    module.write_text("from unisim.cli import plural\n")  # a library module reaching up into the command line
    assert "unisim" in _imports(str(module)) and "unisim" not in ALLOWED["pipelines"]
