"""The OpenAI-compatible gateway and (later) the web chat: routes, protocol, auth and the store."""
