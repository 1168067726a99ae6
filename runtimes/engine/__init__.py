"""What a runtime may offer beyond containers (images, volumes, networks, container creation, the
host), each as a runtime-checkable Protocol with the plain values it returns, one module per kind.

A runtime that has a kind implements its Protocol; the gateway asks ``isinstance`` and answers
``409 OPERATION_NOT_SUPPORTED`` for a runtime without it (Kubernetes has no images of its own).
"""
