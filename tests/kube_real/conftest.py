"""The kube_real tier: a real control plane (etcd, kube-apiserver, kube-controller-manager and the
node agent) started once per session, each test in a namespace of its own."""

from tests.support.kube_fixtures import kclient, kube_namespace, kube_plane  # noqa: F401
