"""Small complete programs. The documentation includes them and `tests/test_examples.py` runs them."""
