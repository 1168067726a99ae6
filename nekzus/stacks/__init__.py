"""Compose stacks: the projects the Docker Engine runs, and the managed ones whose files the
gateway keeps, run by the real Docker Compose binary as a subprocess."""
