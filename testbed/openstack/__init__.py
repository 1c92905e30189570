"""The OpenStack testbed: provisioning, inventory and teardown on a real cloud."""
