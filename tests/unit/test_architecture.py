"""The shape of the package: layers import downward only, no import circle, small files.

docs/architecture.md draws the layers; this test is what keeps the drawing true. Every
import counts, including the lazy ones inside functions (they still make the lower
layer depend on the upper one, only later).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "dashpay"

# Lowest first. A module may import its own layer and the layers before it. The three
# shells at the top form a chain: the CLI starts the daemon (`serve`), the daemon runs
# the sandbox network (`serve --sandbox`); never the other way round.
LAYERS = (
    "domain",
    "wire",
    "config",
    "repository",
    "net",
    "engine",
    "services",
    "api",
    "sandbox",
    "daemon",
    "cli",
)
RANK = {name: rank for rank, name in enumerate(LAYERS)}
# Files directly in dashpay/: the version (imported by everyone) and `python -m dashpay`.
TOP_LEVEL = {"dashpay": -1, "dashpay.__main__": len(LAYERS)}

# Files allowed past MAX_LINES, each with why it is one cohesive thing.
MAX_LINES = 600
LONG_FILES: dict[str, str] = {
    "dashpay/api/commands.py": (
        "THE command table: one declaration per command (parameters, scope, CLI spelling, "
        "HTTP route), so the control socket, the CLI, the HTTP API and OpenAPI are built "
        "from one place; the parsers are in params.py"
    ),
    "dashpay/config/keys.py": (
        "THE table of every config key (type, default, checker, example), read by the "
        "loader, the dataclass defaults, the messages and the config.example.toml test; "
        "the checkers of whole sections live beside it (listen.py, network_values.py...)"
    ),
    "dashpay/net/insight_rest.py": (
        "one client, InsightRest: every REST call shares its retries, the shared 429 "
        "pause, address batching and paging, and the one HTTP/1.1 connection pool; the "
        "payload parsers are in wire/insight_rest.py"
    ),
    "dashpay/sandbox/chain.py": (
        "one model: the simulated chain's state and the Insight JSON it renders from its "
        "own indexes (mempool, blocks, locks, address histories)"
    ),
    "dashpay/services/callbacks/sender.py": (
        "one task, CallbackSender (~540 lines): the receivers it holds, the POST slots, the "
        "outbox reads and the batched outcomes share its state; policy, secret, guard and "
        "the commands are in their own files"
    ),
    "dashpay/services/prices/service.py": (
        "one service, PriceService (~510 lines): the quote cache, single-flight fetches, "
        "failover and the refresh loop share its state; providers and conversion are apart"
    ),
    "dashpay/net/insight_socket.py": (
        "the shell of one Insight connection: connect, handshake, heartbeat, read loop, "
        "reconnect; each step hands the next its state"
    ),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def rank_of(module: str) -> int:
    if module in TOP_LEVEL:
        return TOP_LEVEL[module]
    layer = module.split(".")[1]
    assert layer in RANK, f"{module}: dashpay/{layer}/ is not a known layer; add it to LAYERS"
    return RANK[layer]


def imports_of(path: Path, known: dict[str, Path]) -> list[tuple[str, int, bool]]:
    """(imported dashpay module, line, at module level) for every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` blocks are not run
        if isinstance(node, ast.If):
            top_level.discard(id(node))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            # `from dashpay.x import y` imports the module dashpay.x.y when there is one
            names += [
                f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known
            ]
        for name in names:
            if name == "dashpay" or name.startswith("dashpay."):
                if name not in known:  # an attribute, e.g. `from dashpay import __version__`
                    name = name.rsplit(".", 1)[0] if name.rsplit(".", 1)[0] in known else name
                found.append((name, node.lineno, id(node) in top_level))
    return found


def test_every_layer_imports_only_downward():
    known = modules()
    wrong = []
    for module, path in known.items():
        mine = rank_of(module)
        for imported, line, _ in imports_of(path, known):
            if imported not in known:
                wrong.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line} imports {imported}, which does not exist"
                )
            elif rank_of(imported) > mine:
                wrong.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line} ({LAYERS[mine] if mine >= 0 else 'top'}) "
                    f"imports {imported} ({LAYERS[rank_of(imported)]}), a layer above it"
                )
    assert not wrong, "imports that point up:\n" + "\n".join(wrong)


def test_no_import_circle():
    """Module-level imports form no cycle (a cycle makes import order matter and is
    what forced lazy imports between the CLI's files before)."""
    known = modules()
    graph = {
        module: {
            imported
            for imported, _, top in imports_of(path, known)
            if top and imported in known and imported != module
        }
        for module, path in known.items()
    }
    # A package's __init__ is run before its submodules: importing dashpay.x.y imports
    # dashpay.x; that edge is not a circle of ours.
    for module in graph:
        graph[module] = {m for m in graph[module] if not module.startswith(m + ".")}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    assert not circles, f"import circles: {circles}"


@pytest.mark.parametrize("module", sorted(modules()))
def test_files_stay_small(module):
    path = modules()[module]
    lines = len(path.read_text().splitlines())
    relative = str(path.relative_to(PACKAGE.parent))
    if relative in LONG_FILES:
        return
    assert lines <= MAX_LINES, (
        f"{relative} has {lines} lines: split it into files of one job each, or add it to "
        f"LONG_FILES with the reason it is one cohesive thing"
    )


def test_the_layer_table_names_every_folder():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(LAYERS)
