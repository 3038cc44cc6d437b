"""The one reports layer: what the API, the CLI and the pages show is computed here, once.

- :mod:`.compare` -- comparison rows (per variant or per configuration, mean ± std over
  replicates) from the store's trial finals;
- :mod:`.tables` -- the one table renderer (columns, Markdown, CSV, plain cells for Rich);
- :mod:`.figures` -- which trials a plot uses and how they aggregate.
"""
