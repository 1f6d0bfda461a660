"""The results site: the store's runs, records and hardware as pages people can link to.

    view.py      the store read once into memory (catalog, records, manifests, skips)
    figures.py   plotly figures as JSON (rendered by the bundled plotly.js, offline)
    pages.py     each page from the view, through Jinja2 templates (autoescaped)
    static.py    `hwmatrix site`: every page and asset written under one folder

Pages link to each other with relative paths, so the folder works from a plain file server
and from file://, with no request leaving the machine.
"""
