"""hyperdnn benchmarks: a program (``python benchmarks/run.py``), not tests.

* :mod:`benchmarks.harness` - interleaved timing, peak memory, result records.
* :mod:`benchmarks.workloads` - the workloads W0-W6, every variant of each.
* :mod:`benchmarks.peers` - hypnettorch and HyperLight, detected and reported.
* :mod:`benchmarks.report` - JSON, markdown tables and the W5 scaling plot.
* :mod:`benchmarks.run` - the command line.
"""
