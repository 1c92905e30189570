"""Services that run on a node of any deployed testbed (a namespace here, a cloud VM there):
the netem drift service and the command line the node services share."""
