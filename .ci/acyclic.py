#!/usr/bin/env python3
"""Fails when the crate's modules import each other in a cycle.

Every path a module names (`use crate::…`, `use super::…`, `crate::a::b::f()`
in code) is resolved to the module that defines the item, following `pub use`
re-exports, and the resulting "uses" graph must have no cycle. A module's
`mod` declarations and its tests (`mod tests`) are not uses.

Written here rather than run through `cargo modules dependencies --acyclic`:
that tool builds rust-analyzer's crates (minutes on a CI machine) for an
answer this crate's plain layout gives in a second. Macros and glob imports
are not expanded (the crate uses neither for its own modules).
"""

import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def module_files():
    """Module path (tuple) -> file."""
    modules = {}
    for path in SRC.rglob("*.rs"):
        rel = path.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts == ["lib"]:
            parts = []
        elif parts[-1] == "mod":
            parts = parts[:-1]
        modules[tuple(parts)] = path
    return modules


def strip(source):
    """Code without comments, string literals and `#[cfg(test)] mod tests`."""
    source = re.sub(r"//[^\n]*", "", source)
    source = re.sub(r"/\*.*?\*/", "", source, flags=re.S)
    source = re.sub(r'r#*"(?:.|\n)*?"#*', '""', source)
    source = re.sub(r'"(?:\\.|[^"\\])*"', '""', source)
    match = re.search(r"#\[cfg\(test\)\]\s*mod tests\s*\{", source)
    if match:
        source = source[: match.start()]
    return source


def use_paths(code):
    """Every path named by a `use` tree (expanded) or inline in code."""
    paths = []
    for tree in re.findall(r"\buse\s+([^;]+);", code):
        paths.extend(expand(re.sub(r"\s+", "", tree)))
    code_without_uses = re.sub(r"\buse\s+[^;]+;", "", code)
    for path in re.findall(r"\b((?:crate|super|self)(?:::\w+)+)", code_without_uses):
        paths.append(path.split("::"))
    return [p for p in paths if p and p[0] in ("crate", "super", "self")]


def expand(tree):
    """`a::{b,c::{d}}` -> [[a,b],[a,c,d]]."""
    if "{" not in tree:
        return [tree.split(" as ")[0].split("::")] if tree else []
    head, rest = tree.split("{", 1)
    inner = rest[: rest.rindex("}")]
    items, depth, start = [], 0, 0
    for i, c in enumerate(inner):
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif c == "," and depth == 0:
            items.append(inner[start:i])
            start = i + 1
    items.append(inner[start:])
    prefix = [p for p in head.rstrip(":").split("::") if p]
    out = []
    for item in items:
        for path in expand(item):
            out.append(prefix + path if path != ["self"] else prefix)
    return out


def main():
    modules = module_files()
    codes = {m: strip(f.read_text()) for m, f in modules.items()}
    # Re-exports: module -> {name: absolute path of the target}.
    reexports = {}
    for module, code in codes.items():
        for tree in re.findall(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", code):
            for path in expand(re.sub(r"\s+", "", tree)):
                reexports.setdefault(module, {})[path[-1]] = absolute(module, path)

    def resolve(path, seen=()):
        """The module defining what `path` (absolute) names."""
        current = ()
        for i, segment in enumerate(path):
            child = current + (segment,)
            if child in modules:
                current = child
                continue
            target = reexports.get(current, {}).get(segment)
            if target and tuple(target) not in seen:
                return resolve(target + path[i + 1 :], seen + (tuple(target),))
            return current
        return current

    edges = {}
    for module, code in codes.items():
        for path in use_paths(code):
            absolute_path = absolute(module, path)
            if absolute_path is None:
                continue
            target = resolve(absolute_path)
            # A module's own items, and its children's that it re-exports or
            # declares, are not uses of another module.
            if target == module or target[: len(module)] == module and is_reexport(
                code, path
            ):
                continue
            edges.setdefault(module, set()).add(target)

    cycle = find_cycle(edges)
    name = lambda m: "crate::" + "::".join(m) if m else "crate"
    if cycle:
        print("import cycle: " + " -> ".join(name(m) for m in cycle))
        return 1
    print(f"no import cycles among {len(modules)} modules")
    return 0


def is_reexport(code, path):
    return re.search(r"\bpub(?:\([^)]*\))?\s+use\s+[^;]*\b" + re.escape(path[-1]) + r"\b", code)


def absolute(module, path):
    """`path` as seen from `module`, from the crate root; None if external."""
    base = list(module)
    if path[0] == "crate":
        base, rest = [], path[1:]
    elif path[0] in ("super", "self"):
        rest = list(path)
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                base = base[:-1]
            rest = rest[1:]
    else:
        return None
    return base + rest


def find_cycle(edges):
    state, stack = {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if state.get(nxt) is None:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if state.get(node) is None:
            found = visit(node)
            if found:
                return found
    return None


if __name__ == "__main__":
    sys.exit(main())
