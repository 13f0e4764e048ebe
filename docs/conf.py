"""Sphinx configuration of the course website.

Do not run sphinx-build on this folder directly: ``python -m course_lib.teaching.site build`` stages the
pages (this folder, the executed notebooks, the instructor guide, the benchmark results) into
``_build/site-src`` and builds ``_build/site`` from there, without executing any notebook.
"""

import os

project = "Symmetry-aware graph neural networks for physics and chemistry"
author = "the course authors"
copyright = "the course authors, MIT license"

extensions = [
    "myst_nb",  # Markdown (MyST) pages and executed notebooks, rendered with their stored outputs
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]

root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "conf.py"]
templates_path = ["_templates"]

# --- notebooks: shown as executed by `python -m course_lib.teaching.assign execute`, never re-run here
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

# --- maths: MathJax 3 from the local copy the build puts in _static/mathjax (no CDN: works offline)
mathjax_path = "mathjax/tex-chtml.js"

# --- API reference from the docstrings of course_lib
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_mock_imports = ["tblite"]
napoleon_google_docstring = True
napoleon_numpy_docstring = True
suppress_warnings = ["myst.header", "autosummary", "autodoc.import_object"]

# --- look
html_theme = "sphinx_book_theme"
html_title = "Symmetry-aware GNNs"
html_static_path = ["_static"]
html_theme_options = {
    "repository_url": os.environ.get("COURSE_SITE_REPOSITORY", ""),
    "use_repository_button": bool(os.environ.get("COURSE_SITE_REPOSITORY")),
    "show_toc_level": 2,
    "home_page_in_toc": True,
    "use_download_button": False,  # the sources are not copied into the site (html_copy_source)
}
html_context = {"default_mode": "light"}
html_last_updated_fmt = None
html_copy_source = False
html_show_sourcelink = False


def _unlink_problematic(app, doctree):
    """Docstrings are plain text: ``|v|`` (a norm) or a summary cut inside a literal makes docutils insert a
    "problematic" link to an error message that the page does not show. Show the text instead (the build
    still reports the warning)."""
    from docutils import nodes

    for node in list(doctree.findall(nodes.problematic)):
        node.replace_self(nodes.inline(node.astext(), node.astext(), ids=node["ids"]))


def setup(app):
    app.connect("doctree-read", _unlink_problematic)
