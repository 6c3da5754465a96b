"""How many unconstrained parameters a Stan program has with given data, read from its parameters block.

Methods whose cost grows faster than the number of parameters n (full-rank ADVI: an n x n covariance) are
refused before they run when n is too large (fit.check_method_size). CmdStan reports n only after a run has
started, so the count is read from the program text here: each declaration's size expressions are evaluated
with the data's integer sizes. Declarations outside the small grammar the rendered programs use (see
stan/templates) give None, and no check is made.
"""

from __future__ import annotations

import ast
import math
import re

# Unconstrained size of a declaration with these sizes (Stan reference manual, "Constraint transforms").
_UNCONSTRAINED = {
    "real": lambda: 1,
    "vector": lambda n: n,
    "row_vector": lambda n: n,
    "ordered": lambda n: n,
    "positive_ordered": lambda n: n,
    "simplex": lambda n: n - 1,
    "sum_to_zero_vector": lambda n: n - 1,
    "matrix": lambda r, c: r * c,
}

_DECL = re.compile(r"^(?P<arrays>(?:array\[[^\]]*\]\s*)?)(?P<type>[a-z_]+)\s*(?P<constraint><[^;]*?>)?\s*"
                   r"(?:\[(?P<sizes>[^\]]*)\])?\s+(?P<name>[A-Za-z_]\w*)\s*;$")


def _block(program: str, name: str) -> str | None:
    """Text of the top-level block ``name { ... }`` (braces balanced; comments removed first)."""
    text = re.sub(r"/\*.*?\*/", "", program, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    m = re.search(rf"(?m)^\s*{name}\s*\{{", text)
    if not m:
        return None
    depth, start = 1, m.end()
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    return None


def _evaluate(expr: str, sizes: dict) -> int:
    """An integer size expression (+, -, *, integer division, names of integer data)."""
    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name) and isinstance(sizes.get(node.id), (int,)):
            return sizes[node.id]
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv)):
            a, b = ev(node.left), ev(node.right)
            return {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b, ast.FloorDiv: a // b if b else 0}[type(node.op)]
        raise ValueError(expr)

    return ev(ast.parse(expr.strip().replace("%/%", "//"), mode="eval"))


def unconstrained_size(program: str, data: dict) -> int | None:
    """Number of unconstrained parameters, or None when the parameters block is beyond this reader."""
    block = _block(program, "parameters")
    if block is None:
        return None
    sizes = {k: int(v) for k, v in data.items() if isinstance(v, (int,)) and not isinstance(v, bool)}
    total = 0
    for stmt in (s.strip() for s in block.split(";")):
        if not stmt:
            continue
        m = _DECL.match(stmt + ";")
        if not m or m.group("type") not in _UNCONSTRAINED:
            return None
        try:
            dims = [_evaluate(e, sizes) for e in (m.group("sizes") or "").split(",") if e.strip()]
            arrays = [_evaluate(e, sizes) for e in re.findall(r"array\[([^\]]*)\]", m.group("arrays"))
                      for e in e.split(",")]
            one = _UNCONSTRAINED[m.group("type")](*dims)
        except (ValueError, TypeError, SyntaxError):
            return None
        total += math.prod(arrays) * one
    return total
