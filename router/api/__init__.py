"""Thin HTTP handlers: parse → decide → dispatch → respond."""
