"""The benchmarks, run as modules from the checkout's root (``python -m bench.run_all``), so they
import the shared harness (``bench._harness``) and the test support package (``tests.support``)
without touching ``sys.path``."""
