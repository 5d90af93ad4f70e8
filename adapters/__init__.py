"""Block (NBD) and file (FUSE) adapters that encrypt volumes and directories with the KMS."""
