"""Speed measurements that print numbers (never asserted in tests)."""
