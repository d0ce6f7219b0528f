"""Routing policy: YAML in, validated frozen objects out, and the pure routing engine."""
