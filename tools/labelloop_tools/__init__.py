"""labelloop's development tools: the demo, the benchmarks, synthetic frames and probes.

They live in ``tools/`` beside the product, never in the installed package: the wheel and
the image hold ``labelloop``, ``schemas`` and the services only. An editable install of the
checkout puts ``tools/`` on ``sys.path``, so ``python -m labelloop_tools`` and the tests
import this package from there.
"""
