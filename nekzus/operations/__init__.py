"""Actions that take time: accepted at once, finished by an owned task, kept on disk, announced when done."""
