"""The partner's own page, in one room: ``routes`` (the URLs), ``guard`` (headers, rate
limit, templates), ``tokens`` (the page link and its CSRF), ``view`` (what the
page shows, read in a fixed number of queries) and ``actions`` (what its forms do, each a
domain function).

Kept free of imports so a lower layer that only needs :mod:`tokens` (the ``LINK`` text, a
discreet partner's question) does not load the web app through it.
"""
