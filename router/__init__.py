"""tier-router: an OpenAI-compatible proxy that sends each chat request to the cheapest
model that meets its quality tier."""

__version__ = "0.1.0"
