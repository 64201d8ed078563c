"""The `flannel` CNI plugin: pods on the node's leased subnet through the standard plugins.

Like flannel's own plugin it does no networking itself: it reads the subnet file the agent
writes, turns the network config it was given into a `bridge` (by default) config with
`host-local` IPAM on the leased subnet and the lease's MTU, and runs that plugin (the
"delegate"). The delegate config is kept per container so that DEL and CHECK undo and check
exactly what ADD did, even after the lease changed. Standard library only: a runtime starts
the plugin for every container.
"""
