"""Development tools, not part of the operator's image: the local cluster, its real node, images."""
