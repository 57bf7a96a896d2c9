"""Selective forwarding unit (see issue 6)."""
