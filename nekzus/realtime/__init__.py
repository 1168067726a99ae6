"""What changes as it happens: the event bus, the WebSocket hub, log streams, and the container
state that the runtimes' own events keep current."""
