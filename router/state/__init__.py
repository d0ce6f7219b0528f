"""Shared state behind one interface: in-process by default, Redis across replicas."""
