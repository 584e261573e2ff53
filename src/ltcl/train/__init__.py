"""Training: the epoch loop (``loop``), a stage's training session with curves and resume (``session``, ``resume``), and DDP launch / wrapping (``distributed``)."""
