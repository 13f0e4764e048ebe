"""Static scan of the code a student wrote: reasons to flag it for review.

See :func:`scan_code`; the grader scans the exercise cells and the code cells added or changed with
respect to the distributed student notebook.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterable

from course_lib.teaching.notebook import parse_python

__all__ = ["SUSPICIOUS", "PROTECTED_ROOTS", "import_aliases", "scan_code"]

SUSPICIOUS = [
    (r"\bEXERCISES\b", "the checker registry `EXERCISES`"),
    (r"\brun_checker\b", "the grading function `run_checker`"),
    (r"\b_StopChecking\b", "the checker internals (`StopChecking`)"),
    (r"\b__code__\b", "`__code__` (swapping a function's code)"),
    (r"\b__globals__\b", "`__globals__`"),
    (r"\b__builtins__\b|\bbuiltins\b", "`builtins`"),
    (r"\bsys\s*\.\s*modules\b", "`sys.modules`"),
    (r"grading\W{1,8}hidden\b", "the hidden-tests folder `grading/hidden`"),
    (r"\b_getframe\b|\bf_back\b|\bf_locals\b|\bf_globals\b|\binspect\s*\.\s*(?:stack|currentframe|getouterframes"
     r"|getinnerframes|trace)\b", "stack-frame inspection"),
    (r"\bgc\s*\.\s*get_(?:objects|referrers|referents)\b", "`gc` object inspection"),
    (r"\bos\s*\.\s*_exit\b", "`os._exit`"),
    (r"\bctypes\b", "`ctypes`"),
    (r"\baddaudithook\b|\bsetprofile\b|\bsettrace\b", "interpreter hooks"),
]
PROTECTED_ROOTS = ("course_lib", "builtins")


def _strip_comments(source: str) -> str:
    """``source`` without its comments (strings are kept: paths hide in strings)."""
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type != tokenize.COMMENT]
        return tokenize.untokenize(tokens)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return "\n".join(line.split("#", 1)[0] for line in source.split("\n"))


def import_aliases(sources: Iterable[str]) -> dict[str, str]:
    """``{local name: dotted name}`` of the course_lib modules and objects imported by ``sources``."""
    aliases: dict[str, str] = {"course_lib": "course_lib", "builtins": "builtins"}
    for source in sources:
        try:
            tree = parse_python(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] in PROTECTED_ROOTS:
                        aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.split(".")[0] in PROTECTED_ROOTS:
                    for a in node.names:
                        if a.name != "*":
                            aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    return aliases


def _dotted(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


#: an exercise cell may call ``check`` of this package and nothing else of it (the checkers, the stored expected
#: outputs of the public cases): using them is a way to copy an answer, not to compute it
CHECKER_PACKAGE = "course_lib.teaching.exercises"


def _uses_checkers(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """The dotted name of the self-check machinery that ``node`` uses, if any (``check`` is allowed)."""
    if isinstance(node, ast.Attribute):
        chain = _dotted(node)
        if chain and chain[0] in aliases:
            name = ".".join([aliases[chain[0]], *chain[1:]])
            if name.startswith(CHECKER_PACKAGE + ".") and name != f"{CHECKER_PACKAGE}.check":
                return name
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(CHECKER_PACKAGE):
        names = [f"{node.module}.{a.name}" for a in node.names]
        bad = [n for n in names if n != f"{CHECKER_PACKAGE}.check"]
        return bad[0] if bad else None
    if isinstance(node, ast.Import):
        bad = [a.name for a in node.names if a.name.startswith(CHECKER_PACKAGE)]
        return bad[0] if bad else None
    return None


def scan_code(source: str, aliases: dict[str, str] | None = None, exercise_cell: bool = False) -> list[str]:
    """Reasons to flag ``source`` for review (empty list: nothing suspicious).

    ``aliases``: see :func:`import_aliases` (names bound to course_lib modules). ``exercise_cell``: the
    source is a graded exercise cell, which must not use the self-check machinery
    (:data:`CHECKER_PACKAGE`: the checkers and their stored expected outputs).
    """
    aliases = dict(import_aliases([source]), **(aliases or {}))
    code = _strip_comments(source)
    reasons = [f"mentions {what}" for pattern, what in SUSPICIOUS if re.search(pattern, code)]
    names = "|".join(sorted(re.escape(a) for a in aliases))
    if re.search(rf"\bsetattr\s*\(\s*(?:{names})\b", code) or re.search(rf"\bvars\s*\(\s*(?:{names})\s*\)", code):
        reasons.append("changes a course_lib module with setattr()/vars()")
    try:
        tree = parse_python(source)
    except SyntaxError:
        return reasons
    seen = set()
    for node in ast.walk(tree):
        targets: list[ast.AST] = []
        if isinstance(node, (ast.Assign, ast.Delete)):
            targets = list(node.targets)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        while targets:
            t = targets.pop()
            if isinstance(t, (ast.Tuple, ast.List)):
                targets += list(t.elts)
                continue
            if isinstance(t, ast.Starred):
                targets.append(t.value)
                continue
            into = isinstance(t, ast.Subscript)
            chain = _dotted(t.value if into else t) if isinstance(t, (ast.Attribute, ast.Subscript)) else None
            if chain and chain[0] in aliases and (len(chain) > 1 or into):
                name = ".".join([aliases[chain[0]], *chain[1:]])
                if name not in seen:
                    seen.add(name)
                    reasons.append(f"assigns {'into ' if into else ''}`{name}` (patching the course library)")
        used = _uses_checkers(node, aliases) if exercise_cell else None
        if used and used not in seen:
            seen.add(used)
            reasons.append(f"uses the self-check machinery `{used}` in an exercise cell")
    return list(dict.fromkeys(reasons))
