"""The S3-compatible proxy that envelope-encrypts every object, and the `ssegw` command."""
