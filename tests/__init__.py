"""Test suite of the guard."""
