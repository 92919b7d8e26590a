"""Writes to the catalog, one module per entity: products, categories, and a product's classification state.

The catalog's only writers: the admin, the API, the commands and the classifier call these.
"""
