"""Helpers that more than one app needs."""
