"""Telling people and systems what happened, and letting them ask for a redeploy: outbound
webhooks (signed, persisted, retried), alert rules over the gateway's events, stats and logs, and
inbound deploy hooks reached through a secret URL."""
