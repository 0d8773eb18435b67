"""Measurements of a model on held-out faces: the q probe (Sec. 4.6, ``probe``), the model
report (``model_report``: SWD, probe, q recovery, restoration; ``restore_report``: its restoration
sections), face composites (held-out faces pasted into photos, ``composites``) and held-out
degradation helpers (``heldout``). Each is also a ``python -m evaluation.X`` command. Sits above
``apps``: it runs the applications, they never import it.
"""
