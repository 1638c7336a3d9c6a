"""Open and click tracking: the signed /t/ pixel and /r/ redirect, what a hit records, and the
per-link click statistics (engagement contract 1)."""
