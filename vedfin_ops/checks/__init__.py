"""Smoke, preflight and the capacity gate: checks that say ok or not, and why."""
