"""Capacity, live usage, tables and charts."""
