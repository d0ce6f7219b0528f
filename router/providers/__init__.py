"""Provider adapters: one small protocol, request in, response and usage out."""
