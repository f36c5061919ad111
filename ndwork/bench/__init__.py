"""Benchmarks: `python -m ndwork.bench kernels|models|peers|startup|report`.

Each suite has `run(quick=False) -> dict` (notebook-ready) and `render(dict) -> str`.
"""
