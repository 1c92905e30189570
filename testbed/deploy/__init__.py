"""Deployment over SSH: ansible inventories, the numbered playbooks, log collection."""
