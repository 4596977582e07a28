# cython: language_level=3
"""Fast scanner for order-log lines (being written)."""
