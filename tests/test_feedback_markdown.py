"""The feedback Markdown (``feedback/<student>.md``, :func:`course_lib.teaching.grading.gradebook.feedback`)
renders as intended, whatever the messages contain: parsed with markdown-it-py (CommonMark + tables)."""

from __future__ import annotations

import pytest

from course_lib.teaching.grading.gradebook import Graded, Row, feedback, md_inline

markdown_it = pytest.importorskip("markdown_it")

HOSTILE = [
    "- looks like a list item",
    "1. looks like an ordered list",
    "# looks like a heading",
    "> looks like a quote",
    "| a | b | looks like a table row",
    "an odd ` backtick",
    "raw <b>html</b> and <script>alert(1)</script>",
    "a code span `x < y` and *emphasis*\nwith a newline",
    "===",
]


def _tokens(text: str):
    md = markdown_it.MarkdownIt("commonmark").enable("table")
    return md.parse(text)


def _inline_text(tokens) -> str:
    return "".join(t.content for t in tokens if t.type == "inline")


@pytest.mark.parametrize("message", HOSTILE)
def test_one_message_stays_one_paragraph(message):
    tokens = _tokens(md_inline(message) + "\n")
    kinds = [t.type for t in tokens]
    assert kinds == ["paragraph_open", "inline", "paragraph_close"], (message, kinds)
    children = tokens[1].children
    assert not any(c.type.startswith("html") for c in children), message


def test_feedback_structure_with_hostile_messages():
    rows = [Row("ann", "00_symmetry_primer", f"00.ex{k}", 0.5, 2, "partial", m, details=HOSTILE[:4] + [m],
                output="```\nprinted ``` fences\n```") for k, m in enumerate(HOSTILE)]
    graded = [Graded("ann", "00_symmetry_primer", rows, notes=["- a note", "another note"])]
    text = feedback("ann", graded, rows)
    tokens = _tokens(text)
    kinds = [t.type for t in tokens]
    # the notes are one list of two items, followed by a real table (not swallowed by the list)
    assert kinds.count("table_open") == 1
    assert kinds.count("tr_open") == 1 + len(rows)  # header + one row per exercise
    lists = [k for k, t in enumerate(tokens) if t.type == "bullet_list_open"]
    assert len(lists) == 1 + len(rows)  # the notes + one list of details per exercise
    assert kinds.count("list_item_open") == 2 + sum(len(r.details) for r in rows)
    # every output block is one fence holding the whole output
    fences = [t for t in tokens if t.type == "fence"]
    assert len(fences) == len(rows) and all(f.content.strip() == rows[0].output for f in fences)
    # headings: the title, the notebook, one per exercise; no message became a heading
    assert kinds.count("heading_open") == 2 + len(rows)
    assert not any(c.type.startswith("html") for t in tokens if t.type == "inline" for c in t.children)
