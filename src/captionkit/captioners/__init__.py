"""Backends behind one interface (base.py), found by name (registry.py)."""
