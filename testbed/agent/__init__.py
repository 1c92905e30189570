"""The LOS agent (edge manager): one per node, a real HTTP service on the node's address."""
