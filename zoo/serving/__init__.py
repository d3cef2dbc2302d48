"""The HTTP server of `zoo serve`: OpenAI routes, continuous batching, the chat page."""
