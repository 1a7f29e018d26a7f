"""The audit log as administrators use it: query, chain verification, ATNA export, retention."""
