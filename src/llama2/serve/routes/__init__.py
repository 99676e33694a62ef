"""HTTP routes: thin — parse, authorize, call the gateway, shape the answer (DESIGN.md, Serving)."""
