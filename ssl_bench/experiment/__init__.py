"""Cross-validated experiments: one fold (fold.py), one method's run (run.py), the run directory
(rundir.py), metrics, provenance, and scoring new images with a finished run (inference.py)."""
