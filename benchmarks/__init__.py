"""Benchmarks, run as ``python -m benchmarks.<name>``: like the command-line entry points, they keep
glibc from unmapping every batch's tensors (:mod:`lcam.runtime.allocator`), for ours and the peers alike."""
from lcam.runtime.allocator import tune_cpu_allocator

tune_cpu_allocator()
