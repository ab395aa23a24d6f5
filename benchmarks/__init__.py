"""Benchmarks: our SDK against a bare app and against the peer stack users assemble today.

Run them all with ``python -m benchmarks.run [--quick]``.
"""
