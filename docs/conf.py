"""Sphinx configuration for the napari-exengine documentation."""

project = "napari-exengine"
author = "napari-exengine developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
autodoc_mock_imports = []
autodoc_typehints = "none"
html_theme = "alabaster"
exclude_patterns = ["_build"]
nitpicky = False
suppress_warnings = ["ref.python"]
