"""Wire types of the public APIs (OpenAI-compatible) and the gateway's error model."""
