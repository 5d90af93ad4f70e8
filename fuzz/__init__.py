"""Fuzz targets for every parser that reads untrusted bytes (targets.py), driven by hypothesis
(tests/fuzz_properties) and by atheris (fuzz/harness.py, fuzz/run.py)."""
