// Helper module: an allow-everything admission webhook, the benchmark's floor. See build.sh.
module kiln.dev/hack/noopwebhook

go 1.26.0
