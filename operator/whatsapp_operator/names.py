"""The names of the operator's Kubernetes API, in one place: the operator and the kubectl plugin use these.

Changing one is an API change: objects, annotations and finalizers already in clusters carry them.
"""

from __future__ import annotations

GROUP = "whatsapp-operator.io"
VERSION = "v1alpha1"
PLURAL = "whatsappinstances"
KIND = "WhatsAppInstance"
API_VERSION = f"{GROUP}/{VERSION}"
# The CRD's object name and the `kubectl get` resource name.
RESOURCE = f"{PLURAL}.{GROUP}"
# The Evolution servers instances live on, as cert-manager has Issuers and ClusterIssuers.
SERVER_KIND = "EvolutionServer"
SERVER_PLURAL = "evolutionservers"
CLUSTER_SERVER_KIND = "ClusterEvolutionServer"
CLUSTER_SERVER_PLURAL = "clusterevolutionservers"
# status.server of an instance on the server configured by the operator's environment.
ENVIRONMENT_SERVER = "environment"

FINALIZER = "whatsapp-operator.io/finalizer"
# Actions a person asks for; any new value triggers them once.
RECONNECT_ANNOTATION = "whatsapp-operator.io/reconnect"
LOGOUT_ANNOTATION = "whatsapp-operator.io/logout"
# "true" stops every call to Evolution for the instance; removing it resumes.
PAUSED_ANNOTATION = "whatsapp-operator.io/paused"
# kopf keeps its progress under this prefix and leaves it out of the objects' essence, so the
# user-facing annotations above must not share it.
ANNOTATION_PREFIX = "kopf.whatsapp-operator.io"
# Set by the operator on an object kopf has left waiting (Runtime.nudge_stuck_objects).
NUDGE_ANNOTATION = f"{ANNOTATION_PREFIX}/nudged"
# The component named in the Kubernetes Events the operator posts.
EVENT_SOURCE = "whatsapp-operator"
