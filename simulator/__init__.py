"""The learned simulator: trained checkpoints rolled out autoregressively, as environments and as a server."""
