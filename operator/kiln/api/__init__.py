"""The resource model (kiln.dev/v1alpha1): pydantic models, the CRDs generated from them, spec digests."""
