"""Benchmarks as QA items: MLLMU-Bench layout (real or the embedded world) and CLEAR."""
