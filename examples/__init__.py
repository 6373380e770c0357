"""Extension examples for docs/extending.md: an objective, a dataset and a metric written
outside vaelab, each used by tests/test_extending.py."""
