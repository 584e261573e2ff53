"""Pre-training methods, looked up by name: ``get_method("psd")``.

Importing this package registers every method module."""

from ltcl.methods.base import METHODS, Method, StepOutput, TrainSet, get_method, register  # noqa: F401
from ltcl.methods import contrastive, supervised, temperature  # noqa: F401,E402
