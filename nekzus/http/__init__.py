"""The HTTP side: the app factory, the listener, middlewares, request parsing, JSON errors and the routes."""
