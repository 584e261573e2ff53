"""The library half of every DVC stage, one module per stage of dvc.yaml, named as the stage
(``ood-sampling`` -> ``ood_sampling.py``).  Each module's ``run`` reads the validated params and
the stage's inputs and writes its outputs; ``stages/<stage>.py`` only calls it through
``ltcl.stage.run_stage``.  This is the top layer: nothing in ltcl imports it."""
