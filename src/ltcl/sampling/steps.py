"""The steps of one OOD sampling update, as its timings name them (paper 003 Table 15): a leaf
with no imports, so that the report reads them without importing the sampling code."""

SELECT_STEPS = ("clustering", "tailness", "budget", "sampling")  # timed inside a strategy's select
UPDATE_STEPS = ("embedding", *SELECT_STEPS, "total")  # the whole update (ltcl.sampling.refresh)
