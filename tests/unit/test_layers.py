"""The package's layers, as the README's layout paragraph draws them, hold: imports only point down.

entry points (web, cli, scheduler, runtime, sending_processes) -> feedback -> people -> sending
-> content -> the core (everything else at the top of the package). A module may import its own
layer and any below it, never one above: that is what lets a newcomer read the code top to bottom.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nurture

PACKAGE = Path(nurture.__file__).parent
LAYERS = ("core", "content", "sending", "people", "feedback", "entry")  # bottom to top
ENTRY_MODULES = {"scheduler", "runtime", "sending_processes", "__main__"}


def layer_of(module: str) -> str:
    """The layer of a module named relative to the package (``sending.sender``, ``config``)."""
    top = module.split(".")[0]
    if top in ("web", "cli") or module in ENTRY_MODULES:
        return "entry"
    return top if top in LAYERS else "core"


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module relative to the package) for every ``nurture`` import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "nurture":
            base = node.module.partition(".")[2]
            if not base or base in LAYERS:  # `from nurture import x` / `from nurture.sending import sender`
                found += [(node.lineno, f"{base}.{alias.name}".lstrip(".")) for alias in node.names]
            else:
                found.append((node.lineno, base))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.partition(".")[2]) for alias in node.names
                      if alias.name.startswith("nurture.")]
    return found


def test_layer_of_reads_the_layout():
    assert layer_of("web.app") == "entry"
    assert layer_of("sending_processes") == "entry"
    assert layer_of("feedback.reports") == "feedback"
    assert layer_of("sending.sender") == "sending"
    assert layer_of("config") == "core"


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        if module.startswith("migrations"):
            continue
        mine = LAYERS.index(layer_of(module))
        for line, target in imported_modules(path):
            if LAYERS.index(layer_of(target)) > mine:
                upward.append(f"{module}:{line} imports {target} ({layer_of(target)} is above {layer_of(module)})")
    assert upward == []


def test_every_module_is_found():
    # The walk above must see the sub-packages, or it would pass by looking at nothing.
    modules = {".".join(p.relative_to(PACKAGE).with_suffix("").parts) for p in PACKAGE.rglob("*.py")}
    assert {"sending.sender", "people.subscribers", "feedback.tracking", "content.rendering", "web.app"} <= modules
