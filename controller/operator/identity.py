"""Who this operator process is on the API server: its finalizer, field manager and annotation prefix
(pure: no I/O).

Several processes may work on the same LocalModel at once (node agents: one per node), so every name
they write under is their own. Nothing is shared between two agents: not a finalizer, not a kopf
annotation, not a server-side-apply field manager. A central operator is a single writer and uses the
plain names.

Finalizers and annotation keys must be qualified names: an optional DNS-subdomain prefix, `/`, and a
name of at most 63 characters (`[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`). Node names can be 253
characters long, so long ones are shortened and made unique again with a hash.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Final

from controller.crd import GROUP

CENTRAL: Final = "central"
NODE_AGENT: Final = "node-agent"
MODES: Final = (CENTRAL, NODE_AGENT)
AGENT_FINALIZER_PREFIX: Final = f"{GROUP}/agent-"

MAX_NAME_LENGTH: Final = 63  # the name part of a qualified name, and a DNS label
_HASH_LENGTH: Final = 10
_NOT_NAME_CHARS = re.compile(r"[^a-z0-9-]+")


@dataclass(frozen=True)
class Identity:
    """The names one operator process writes under."""

    mode: str
    node: str | None = None  # node-agent mode only

    @property
    def agent_id(self) -> str:
        """`central`, or `agent-<node>` (a DNS label, shortened with a hash when too long)."""
        if self.node is None:
            return CENTRAL
        return short_label("agent-" + self.node)

    @property
    def finalizer(self) -> str:
        """`localmodel.io/finalizer` (central) or `localmodel.io/agent-<node>` (one per node agent)."""
        return f"{GROUP}/finalizer" if self.node is None else f"{GROUP}/{self.agent_id}"

    @property
    def field_manager(self) -> str:
        """Server-side-apply manager of the status fields this process owns."""
        return "localmodel-operator" if self.node is None else f"localmodel-{self.agent_id}"

    @property
    def annotation_prefix(self) -> str:
        """Prefix of the (rarely written) kopf retry annotations: `<agent-id>.localmodel.io`."""
        return GROUP if self.node is None else f"{self.agent_id}.{GROUP}"

    @property
    def reporting_component(self) -> str:
        """The `source.component` of the Kubernetes Events this process posts."""
        return "localmodel-operator" if self.node is None else "localmodel-agent"


def short_label(text: str) -> str:
    """`text` as a DNS label of at most 63 characters: lowercased, other characters turned into `-`,
    and, when it had to be changed or shortened, suffixed with a hash of the original so that two
    different inputs never map to the same label."""
    label = _NOT_NAME_CHARS.sub("-", text.lower()).strip("-")
    if label == text and len(label) <= MAX_NAME_LENGTH:
        return label
    digest = hashlib.sha256(text.encode()).hexdigest()[:_HASH_LENGTH]
    head = label[: MAX_NAME_LENGTH - _HASH_LENGTH - 1].rstrip("-")
    return f"{head}-{digest}" if head else digest
