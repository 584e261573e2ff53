"""Distillation methods (the distill stage): KDUP's guided distillation of g from the frozen f
(``guided``) and GML's student trained from the frozen teacher's queues (``gml``)."""
