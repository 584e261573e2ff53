"""Report rendering: the self-contained HTML / Markdown page of a pipeline run (``html``) and its figures (``plots``)."""
