"""Subnet leasing: lease formats, the lease manager and the lease watch."""
