"""BGP routed mode's parts: BIRD's configuration from the leases, and BIRD's control socket.

Work in progress (issue 12): the backend that runs them is not there yet.
"""
