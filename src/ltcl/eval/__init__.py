"""Evaluation of frozen representations: features (``features``), linear probe (``probe``),
protocols (``protocols``), kNN (``knn``), cluster metrics and t-SNE (``cluster_metrics``), class
geometry (``geometry``), a method's own classifier (``classifier``).  Never imports
``ltcl.train``.  Import from the module; this package re-exports nothing."""
