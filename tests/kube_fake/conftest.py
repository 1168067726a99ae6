"""The kube_fake tier: the Kubernetes backend through the gateway against the fake apiserver
(tests/support/fake_kube.py), in-process, with no daemon."""

from tests.support.fake_kube_fixtures import kube, kubeconfig  # noqa: F401
