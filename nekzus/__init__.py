"""nekzus: a real-time container-management gateway for Docker and Kubernetes."""

__version__ = "0.1.0"
