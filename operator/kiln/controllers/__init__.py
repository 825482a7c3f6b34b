"""One controller per kind (artifacts, workloads, deployments), each a pure plan and the code that applies it."""
