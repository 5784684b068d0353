"""dashpay's benchmark suite (issue 8): `benchmarks/run`, see README.md beside this file.

A package so the scenarios can share the harness (`python -m benchmarks ...` from the
repository root); it is not installed with dashpay and the tests only run it as a
subprocess.
"""
