"""Who may ask what: Host and Origin checks before anyone is identified, authentication and scopes, rate
limits, and TLS for the listener."""
