#!/usr/bin/env python3
"""Fails when the crate's modules import each other in a cycle.

Every path a module names (`use` trees, and `crate::…`, `super::…`,
`self::…` or `child_module::…` paths in code) is resolved to the module that
defines the item, following `pub use` re-exports, and the resulting "uses"
graph must have no cycle. A module's `mod` declarations and its
`#[cfg(test)]` modules are not uses; neither are a parent's re-exports of its
own children's items (`pub use child::Item`).

Written here rather than run through `cargo modules dependencies --acyclic`:
that tool builds rust-analyzer's crates (minutes on a CI machine) for an
answer this crate's plain layout gives in a second. Macros and glob imports
(`use x::*`) are not expanded; the crate uses neither for its own modules
outside tests.

    python3 .ci/acyclic.py           # check
    python3 .ci/acyclic.py --edges   # print the graph
"""

import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def module_files():
    """Module path (tuple) -> file."""
    modules = {}
    for path in SRC.rglob("*.rs"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts == ["lib"]:
            parts = []
        elif parts[-1] == "mod":
            parts = parts[:-1]
        modules[tuple(parts)] = path
    return modules


RAW = re.compile(r'b?r(#*)"')
CHAR = re.compile(r"(\\x[0-9a-fA-F]{2}|\\u\{[0-9a-fA-F_]+\}|\\.|[^\\'])'")


def code_of(source):
    """The source with comments, string and character literals blanked
    (replaced by spaces or empty literals), lifetimes kept."""
    out, i, n = [], 0, len(source)
    while i < n:
        c = source[i]
        if source.startswith("//", i):
            j = source.find("\n", i)
            i = n if j < 0 else j
        elif source.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if source.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif source.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            out.append(" ")
        elif RAW.match(source, i):
            m = RAW.match(source, i)
            end = source.find('"' + m.group(1), m.end())
            i = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""')
        elif c == '"' or source.startswith('b"', i):
            i += 2 if c == "b" else 1
            while i < n and source[i] != '"':
                i += 2 if source[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" or source.startswith("b'", i):
            # A character literal ('x', '\n', '\u{..}'), else a lifetime.
            m = CHAR.match(source, i + (2 if c == "b" else 1))
            if m:
                i = m.end()
                out.append("' '")
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def without_test_modules(code):
    """Drops every `#[cfg(test)]` item that is a module with a body."""
    while True:
        m = re.search(r"#\[cfg\(test\)\](?:\s*#\[[^\]]*\])*\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{", code)
        if not m:
            return code
        depth, i = 1, m.end()
        while depth and i < len(code):
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            i += 1
        code = code[: m.start()] + code[i:]


def inline_modules(module, code):
    """The module's code, and each inline `mod name { … }` in it as a module
    of its own."""
    out = {}
    while True:
        m = re.search(r"\bmod\s+(\w+)\s*\{", code)
        if not m:
            out[module] = code
            return out
        depth, i = 1, m.end()
        while depth and i < len(code):
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            i += 1
        out.update(inline_modules(module + (m.group(1),), code[m.end() : i - 1]))
        code = code[: m.start()] + code[i:]


def expand(tree):
    """A `use` tree -> its (path, name) pairs:
    `a::{b, c::{d as e}}` -> [([a, b], b), ([a, c, d], e)]. A path from the
    extern prelude (`::x`) starts with an empty segment."""
    tree = re.sub(r"\s*(::|\{|\}|,)\s*", r"\1", tree.strip())
    if "{" not in tree:
        words = tree.split()
        if not words:
            return []
        path = words[0].split("::")
        name = words[2] if len(words) == 3 and words[1] == "as" else path[-1]
        return [(path, name)]
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
    prefix = head.split("::")[:-1] if head.endswith("::") else head.split("::")
    out = []
    for item in items:
        for path, name in expand(item):
            if path == ["self"]:
                out.append((prefix, name if name != "self" else prefix[-1]))
            else:
                out.append((prefix + path, name))
    return out


USE = re.compile(r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);")


def main():
    modules = module_files()
    codes = {}
    for module, file in modules.items():
        codes.update(inline_modules(module, without_test_modules(code_of(file.read_text()))))
    modules.update({m: None for m in codes})

    imports = {}

    def absolute(module, path):
        """`path` as written in `module`, from the crate root; None when it
        names nothing of this crate (std, a dependency, a local item)."""
        first = path[0]
        if first == "":
            return None
        if first == "crate":
            return path[1:]
        if first in ("self", "super"):
            base, rest = list(module), list(path)
            while rest and rest[0] in ("self", "super"):
                if rest[0] == "super":
                    base = base[:-1]
                rest = rest[1:]
            return base + rest
        if tuple(module) + (first,) in modules:
            return list(module) + path
        imported = imports.get(module, {}).get(first)
        if imported:
            return imported + path[1:]
        return None

    # Names each module imports, and the ones it re-exports: module ->
    # {name: absolute path}.
    reexports = {}
    for module, code in codes.items():
        for public, tree in USE.findall(code):
            for path, name in expand(tree):
                target = absolute(module, path)
                if target:
                    imports.setdefault(module, {})[name] = target
                    if public:
                        reexports.setdefault(module, {})[name] = target

    def resolve(path, seen=()):
        """The module defining what the absolute `path` names."""
        current = ()
        for i, segment in enumerate(path):
            if current + (segment,) in modules:
                current += (segment,)
                continue
            target = reexports.get(current, {}).get(segment)
            if target and tuple(target) not in seen:
                return resolve(target + path[i + 1 :], seen + (tuple(target),))
            return current
        return current

    edges = {}
    for module, code in codes.items():
        paths = []
        rest = USE.sub("", code)
        for public, tree in USE.findall(code):
            for path, name in expand(tree):
                # A re-export of its own descendant's item is not a use,
                # unless the module also uses the item itself.
                used_here = re.search(r"\b" + re.escape(name) + r"\b", rest)
                paths.append((bool(public) and not used_here, path))
        paths += [(False, p.split("::")) for p in re.findall(r"(?<!::)\b(?:\w+::)+\w+", rest)]
        for reexport, path in paths:
            absolute_path = absolute(module, path)
            if absolute_path is None:
                continue
            target = resolve(absolute_path)
            inside = target[: len(module)] == module
            if target == module or (reexport and inside):
                continue
            edges.setdefault(module, set()).add(target)

    name = lambda m: "crate::" + "::".join(m) if m else "crate"
    if "--edges" in sys.argv:
        for module in sorted(edges):
            print(f"{name(module)} -> " + ", ".join(name(t) for t in sorted(edges[module])))
    cycle = find_cycle(edges)
    if cycle:
        print("import cycle: " + " -> ".join(name(m) for m in cycle))
        return 1
    print(f"no import cycles among {len(modules)} modules")
    return 0


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
