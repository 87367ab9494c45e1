"""Chaos tests: components killed -9 at random moments."""
